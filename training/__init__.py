"""Training: tf.data input from CURATED shards, Keras Inception V3, evaluation, model registry."""
