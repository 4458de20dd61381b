"""The Dagster GraphQL operations the deployment tests drive a real webserver with (tests/test_daemon.py,
tests/k8s/test_scale.py)."""

from __future__ import annotations

from typing import Any

SENSOR = """query ($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  __typename ... on Sensor { id sensorState { id status } } ... on PythonError { message } } }"""
STOP_SENSOR = """mutation ($id: String!) { stopSensor(id: $id) { __typename
  ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }"""
ADD_PARTITION = """mutation ($repo: RepositorySelector!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: "spec", partitionKey: $key) {
    __typename ... on AddDynamicPartitionSuccess { partitionKey } ... on PythonError { message } } }"""


def loaded_repository(client: Any) -> tuple[str, str] | None:
    """(location, repository) of the first code location the webserver has loaded, or None yet."""
    data = client._execute("{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }")
    nodes = data["repositoriesOrError"].get("nodes") or []
    return (nodes[0]["location"]["name"], nodes[0]["name"]) if nodes else None
