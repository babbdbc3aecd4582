"""The `facescale` app: the root command, the state every command shares, the shared options, and `main`.

Expected failures (bad input, bad config, missing or malformed data) are printed as one
``error: ...`` line on stderr with exit status 2; nothing is left half-written.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.logging import RichHandler
from rich.text import Text

from facescale import __version__
from facescale.app.extras import missing_extra
from facescale.app.services import Services
from facescale.config import Settings, load_settings
from facescale.errors import FacescaleError

from .render import err, out

if TYPE_CHECKING:
    from facescale.serving.recognizer import Backend, Recognizer

app = typer.Typer(
    help="facescale: grow, curate, train on and serve a labelled face dataset.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

VersionArg = Annotated[str, typer.Argument(metavar="VERSION", help="a version id, or 'latest'")]
IdentityArg = Annotated[str, typer.Argument(help="identity name or slug")]
ImageIdsArg = Annotated[list[str], typer.Argument(help="source image ids (shown on the contact sheets)")]
ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="registered model id, or 'latest' (default: serving.model)")
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend", "-b",
        help="'model' (our Inception V3) or 'dlib' (pretrained embedder, enrolled gallery); "
        "default: the one the model's calibration chose",
    ),
]


class State:
    """What the root options decide, shared with every subcommand."""

    def __init__(self, config_file: Path | None, verbose: int = 0) -> None:
        self.config_file = config_file
        self.verbose = verbose
        self._settings: Settings | None = None

    def tensorflow(self) -> None:
        """Import TensorFlow (before the modules that need it), its C++ start-up lines only with -vv."""
        from facescale.app.tflog import import_tensorflow

        import_tensorflow(show_logs=self.verbose >= 2)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_file)
        return self._settings

    @property
    def services(self) -> Services:
        """The stores and stage calls of these settings (facescale.app.services, shared with the DAGs)."""
        return Services(self.settings)

    def recognizer(self, model: str | None) -> Recognizer:
        """A registered model (id, ``latest``, or None: ``serving.model``) loaded for serving; TensorFlow is
        imported first, quietly, only if its Keras model is needed."""
        return self.services.recognizer(model, before_load=self.tensorflow)


def state_of(ctx: typer.Context) -> State:
    """The `State` of the running command."""
    return ctx.ensure_object(State)


def parse_backend(value: str) -> Backend:
    """``--backend``'s value, checked."""
    if value not in ("model", "dlib"):
        raise FacescaleError(f"unknown backend {value!r}: use 'model' or 'dlib'")
    return cast("Backend", value)


def maybe_backend(value: str | None) -> Backend | None:
    """``--backend``'s value checked, None when it was not given (the model's default backend)."""
    return None if value is None else parse_backend(value)


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="YAML config file (default: $FACESCALE_CONFIG or ./facescale.yaml)"
        ),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="-v info, -vv debug")
    ] = 0,
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = RichHandler(console=err, show_path=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler])
    ctx.obj = State(config, verbose)


@app.command()
def version() -> None:
    """Print the installed facescale version."""
    out.print(__version__)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning expected errors into one line and exit status 2."""
    try:
        # Typer (>= 0.23) runs on its own copy of click: its usage errors, Abort and Exit
        # are typer's classes, not the `click` package's.
        status = app(args=argv, standalone_mode=False)
    except FacescaleError as exc:
        # One line, and the message is text, not rich markup (names may hold "[...]").
        message = " ".join(str(exc).split("\n")) or type(exc).__name__
        err.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        extra = missing_extra(sys.argv[1:] if argv is None else argv, exc.name)
        if extra is None:
            raise
        message = (
            f"this command needs the '{extra}' extra (no module named {exc.name!r}): "
            f"pip install 'facescale[{extra}]'"
        )
        err.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
        return 2
    except typer.Abort:
        err.print("aborted")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: usage line, hint and message
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err.print(Text(f"error: {exc.format_message()}"), highlight=False, soft_wrap=True)
        return exc.exit_code
    # Without standalone mode an Exit raised inside (e.g. by --help) comes back as its code.
    return status if isinstance(status, int) else 0


