"""ResponseCacheTable: the DynamoDB table where the gateway keeps answers for cached routes."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from constructs import Construct

from llm_serving.quota_table import KeyedTable, grant_items
from llm_serving.stage import Stage

# What lambda/llm_gateway's response cache sends: GetItem on a lookup, a conditional PutItem
# (attribute_not_exists, so concurrent identical misses never overwrite) on a store.
CACHE_ITEM_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem")


class ResponseCacheTable(KeyedTable):
    """Cached answers, one item per key ``pk`` (a hash of the route, the scope and the
    request), expiring through TTL on ``expires_at`` (a :class:`KeyedTable`). The items hold
    answers to prompts: the key and the function's grant are what protect them."""

    KEY_DESCRIPTION = "Encrypts the LLM gateway's cached answers"

    def __init__(self, scope: Construct, construct_id: str, *, stage: Stage) -> None:
        """
        :param stage: ``Stage.DEV`` (cached answers go with the stack) or ``Stage.PROD``
            (the table is retained, with deletion protection). Required.
        """
        super().__init__(scope, construct_id, stage=stage)

    def grant_cache_access(self, grantee: iam.IGrantable) -> iam.Grant:
        """``dynamodb:GetItem`` and ``dynamodb:PutItem`` on this table only (no update, delete,
        scan or query), and its key through DynamoDB only."""
        return grant_items(grantee, CACHE_ITEM_ACTIONS, self.table, self.key)
