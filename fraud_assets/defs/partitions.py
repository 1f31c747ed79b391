"""One dynamic partition per landed file, keyed by content (see fraud_assets.landing)."""

import dagster as dg

message_files = dg.DynamicPartitionsDefinition(name="message_files")
