"""The HTTP router. `api.core` is the serving logic without any transport (predictor, live heads,
embedding cache, rate limits, monitoring); `api.web` is the Flask adapter on top of it (app factory,
blueprints, authentication, error rendering, the OpenAPI document). Router processes never import
TensorFlow."""
