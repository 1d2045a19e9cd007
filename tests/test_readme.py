"""The README's construct example runs as written (it is the library's first-contact API)."""

from __future__ import annotations

import os
import re
from typing import Any

from aws_cdk import Stack
from aws_cdk.assertions import Template

from tests.conftest import ROOT


def test_readme_construct_example_synthesizes() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Using the constructs in your own app", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    namespace: dict[str, Any] = {}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(match.group(1), "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    stack = namespace["stack"]
    assert isinstance(stack, Stack)
    template = Template.from_stack(stack)
    endpoint_name = namespace["endpoint"].endpoint_name.lower()
    template.resource_count_is("AWS::SageMaker::Endpoint", 1)
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {"PolicyDocument": {"Statement": [{"Action": "sagemaker:InvokeEndpoint",
            "Effect": "Allow", "Resource": {"Fn::Join": ["", [
                "arn:", {"Ref": "AWS::Partition"}, ":sagemaker:eu-west-1:",
                {"Ref": "AWS::AccountId"}, f":endpoint/{endpoint_name}",
            ]]}}]}},
    )  # fmt: skip
