"""The whole app synthesizes in each supported region with that region's registry account."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Template

from tests.conftest import build_default, iam_statements

EXPECTED_ACCOUNT = {
    "us-east-1": "763104351884",
    "us-west-2": "763104351884",
    "eu-west-1": "763104351884",
    "ap-northeast-1": "763104351884",
    "eu-south-1": "692866216735",  # Milan has its own DLC registry
    "af-south-1": "626614931356",  # Cape Town too; CDK's region facts lack it
}


@pytest.mark.parametrize("region", list(EXPECTED_ACCOUNT))
def test_images_come_from_the_regions_registry(region: str) -> None:
    _, built = build_default(region=region)
    account = EXPECTED_ACCOUNT[region]
    for name, stack in built.models.items():
        template = Template.from_stack(stack)
        (model,) = template.find_resources("AWS::SageMaker::Model").values()
        image = model["Properties"]["PrimaryContainer"]["Image"]
        assert image.startswith(f"{account}.dkr.ecr.{region}.amazonaws.com/"), (name, image)
        pulls = [s for s in iam_statements(template) if "ecr:BatchGetImage" in s["Action"]]
        assert [s["Resource"] for s in pulls] == [
            f"arn:aws:ecr:{region}:{account}:repository/{image.split('/')[1].split(':')[0]}"
        ]
