"""The run tags the factory sets and reads (the run queue's limits, sharding, ``factory status``)."""

PARTITION_TAG = "dagster/partition"  # Dagster's own, on every run of a partition: the spec's key
SPEC_TAG = "factory/spec"            # every run the factory launches for a spec carries its partition key
SHARD_TAG = "factory/shard"          # "<key>/<i>": at most one run per shard at a time (instance limits)
SHARDS_TAG = "factory/shards"        # how many shards the batch has
BATCH_TAG = "factory/shard-batch"    # the shards launched together, and the run after them
THEN_TAG = "factory/then"            # the job to run on the partition once every shard of the batch is done
