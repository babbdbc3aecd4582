"""The Airflow plugin that puts the review view in Airflow's UI (found through the ``airflow.plugins`` entry point).

Airflow 3's own extension points: ``fastapi_apps`` mounts `web.create_app` on the api-server
under ``/facescale``, and ``external_views`` shows its pages inside the UI: "facescale" in the
navigation bar (growth, review queue) and a "Dataset version" tab on every DAG run (the
versions and models that run published, from its asset events). Installed with the package
(``pip install 'facescale[airflow]'``), so every Airflow that has facescale has the view;
nothing is copied into a plugins folder.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from .web import create_app

#: Where the api-server mounts the view.
URL_PREFIX = "/facescale"


class FacescalePlugin(AirflowPlugin):
    """The facescale review view: pages and routes on the api-server, tabs in the UI."""

    name = "facescale"
    # Airflow's interface is class attributes (AirflowPlugin declares them as lists)
    fastapi_apps: list[dict[str, Any]] = [  # noqa: RUF012
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "facescale review view"}
    ]
    external_views: list[dict[str, Any]] = [  # noqa: RUF012
        {
            "name": "facescale",
            "href": "facescale/growth",  # relative to the UI's base URL
            "destination": "nav",
            "url_route": "facescale",
            "category": "browse",
        },
        {
            "name": "facescale review queue",
            "href": "facescale/queue",
            "destination": "nav",
            "url_route": "facescale_queue",
            "category": "browse",
        },
        {
            "name": "Dataset version",
            "href": "facescale/runs/{DAG_ID}/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "facescale_run",
        },
    ]
