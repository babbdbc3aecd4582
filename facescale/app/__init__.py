"""The top floor: what wires the stages together for people and schedulers.

`services` is the composition root (the storage root, the stages' calls, training with
registration and calibration, serving's loading); `orchestration` is the work of the Airflow
DAGs' tasks; `cli` is the command line; `extras` and `tflog` serve the command line only.
Nothing below (the stages, storage, config) imports from here.
"""
