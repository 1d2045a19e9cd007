"""Local run without an AWS account: a SageMaker-runtime emulator and the runner behind
``make local``. Test and development tooling only; never deployed."""
