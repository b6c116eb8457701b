"""A real S3-compatible server for the tests: moto's server mode (`moto_server`, from the `test` extra) on a
loopback port, with authentication on (an IAM user and key made first), a bucket, and the environment a
search needs to reach it the way Ray does, through pyarrow."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import helpers

REGION = "us-east-1"


@dataclass
class S3Server:
    port: int
    proc: subprocess.Popen
    key: str
    secret: str
    bucket: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, endpoint_env: bool = True) -> dict[str, str]:
        """The subprocess environment: credentials, and with endpoint_env the endpoint as AWS_ENDPOINT_URL."""
        env = {**helpers.ENV, "AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
               "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}
        env.pop("AWS_ENDPOINT_URL", None)
        if endpoint_env:
            env["AWS_ENDPOINT_URL"] = self.endpoint
        return env

    def uri(self, path: str, query: bool = False) -> str:
        """s3://bucket/path, with pyarrow's ?endpoint_override=...&scheme=http when query is set."""
        return f"s3://{self.bucket}/{path}" + (f"?endpoint_override=127.0.0.1:{self.port}&scheme=http" if query else "")

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.key,
                            aws_secret_access_key=self.secret, region_name=REGION)

    def keys(self, prefix: str) -> list[str]:
        out, token = [], None
        while True:
            kw = {"ContinuationToken": token} if token else {}
            page = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix, **kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                return out

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def pause(self) -> None:
        """The server stops answering (its process stopped, connections hang), its data kept."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        self.proc.wait(timeout=30)


def start(bucket: str = "birdtune-test") -> S3Server:
    """moto_server on a free loopback port; the first 4 requests (user, policy, key, bucket) are the only
    ones it takes without valid credentials."""
    import boto3

    port = helpers.free_port()
    cli = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([cli, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    if not helpers.wait_for(lambda: helpers.listening(port), 60, every=0.2):
        proc.kill()
        raise RuntimeError("moto_server did not start")
    setup = dict(endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="setup", aws_secret_access_key="setup",
                 region_name=REGION)
    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="birdtune")
    iam.put_user_policy(UserName="birdtune", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="birdtune")["AccessKey"]
    boto3.client("s3", **{**setup, "aws_access_key_id": key["AccessKeyId"],
                          "aws_secret_access_key": key["SecretAccessKey"]}).create_bucket(Bucket=bucket)
    return S3Server(port, proc, key["AccessKeyId"], key["SecretAccessKey"], bucket)
