"""The review view: facescale's pages in the Airflow UI (growth, versions, identities, the review queue).

`pages` reads what each page shows from the store, `web` is the FastAPI app with its access
checks, `plugin` registers it with Airflow (an ``airflow.plugins`` entry point).
"""
