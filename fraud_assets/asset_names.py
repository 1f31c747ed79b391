"""Asset names, one constant each, for code that refers to an asset by name (storage paths, lookups).

Dagster names an asset after its function, so each constant must equal a function name in
``defs/assets``; tests/test_definitions.py checks that the two agree.
"""

RAW_MESSAGES = "raw_messages"
VALIDATED_MESSAGES = "validated_messages"
MESSAGE_EMBEDDINGS = "message_embeddings"
TIME_FEATURES = "time_features"
TRAINING_DATASET = "training_dataset"
FRAUD_CLASSIFIER = "fraud_classifier"
EVALUATION_REPORT = "evaluation_report"
PRODUCTION_MODEL = "production_model"

ALL = (
    RAW_MESSAGES, VALIDATED_MESSAGES, MESSAGE_EMBEDDINGS, TIME_FEATURES,
    TRAINING_DATASET, FRAUD_CLASSIFIER, EVALUATION_REPORT, PRODUCTION_MODEL,
)  # fmt: skip
