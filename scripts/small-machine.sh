# Sourced by scripts/airflow-env.sh (`make demo`, `make airflow`) and scripts/cluster.sh
# (`make cluster`): curation and training sized for a 2-core machine and lfw-dev's photos.
# Every value can be overridden from the environment.
# lfw-dev has 20-50 photos for most of these people and the demo web mixes in trouble, so
# fewer survive curation than the seed's 30-photo minimum: wait for 15 (the rest of the
# seed's rules stand: 50 sources per identity, short ones topped up by augmentation only).
export FACESCALE_CURATION__MIN_PER_IDENTITY=${FACESCALE_CURATION__MIN_PER_IDENTITY:-15}
# A small training configuration for a 2-core CPU (Inception V3 at its smallest input, 4
# epochs of 40 batches of 32 = 5,120 samples): it shows the loop end to end; real models train
# on GPUs (docker/). BatchNorm moving statistics with momentum 0.9: with Inception V3's 0.99
# they still hold much of their initial values after a few hundred steps (measured on the
# demo version, 3 x 20 batches: val top-1 0.040, one identity for every face, against 0.069
# with 0.9, same weights updates; 4 x 40 batches with 0.9: test top-1 0.165).
# Quality bar: 3x chance over the demo's 31 identities.
export FACESCALE_TRAINING__IMAGE_SIZE=${FACESCALE_TRAINING__IMAGE_SIZE:-75}
export FACESCALE_TRAINING__MAX_EPOCHS=${FACESCALE_TRAINING__MAX_EPOCHS:-4}
export FACESCALE_TRAINING__BATCH_SIZE=${FACESCALE_TRAINING__BATCH_SIZE:-32}
export FACESCALE_TRAINING__BATCHNORM_MOMENTUM=${FACESCALE_TRAINING__BATCHNORM_MOMENTUM:-0.9}
export FACESCALE_ORCHESTRATION__MAX_STEPS_PER_EPOCH=${FACESCALE_ORCHESTRATION__MAX_STEPS_PER_EPOCH:-40}
export FACESCALE_ORCHESTRATION__MIN_TEST_TOP1=${FACESCALE_ORCHESTRATION__MIN_TEST_TOP1:-0.1}
