"""``ldm-hub push``: upload a pipeline folder to a Hub repo (weights, model card, diffusers loader files)."""

from __future__ import annotations

from pathlib import Path

from ._common import ENVIRONMENT, CommandError


def add_parser(sub) -> None:
    push = sub.add_parser(
        "push",
        help="upload a pipeline folder to a Hugging Face Hub repo (model card and pipeline.py included)",
        description="Load FOLDER (an ldm_hub or diffusers-format LDM pipeline folder, or a Hub repo id) and push it "
        "to REPO_ID in one commit, with a model card, the pipeline.py that lets plain diffusers load it, and "
        "only the files that changed. The token comes from --token, HF_TOKEN or `hf auth login`.",
    )
    push.add_argument("folder", metavar="FOLDER", help="pipeline folder (model_index.json + components)")
    push.add_argument("repo_id", metavar="REPO_ID", help="Hub repo, e.g. me/my-ldm (created if missing)")
    push.add_argument("--commit-message", help="commit message (default: 'Upload LDMPipeline')")
    push.add_argument("--revision", help="branch to commit to (created from main if missing), or refs/pr/N")
    push.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    push.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    push.add_argument("--variant", help="weights variant to upload, e.g. fp16 (written as *.fp16.safetensors)")
    push.add_argument("--license", default="apache-2.0", help="license in the model card (default apache-2.0)")
    push.add_argument("--base-model", help="Hub repo the weights were converted from (for the model card)")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored login)")


def _is_network_error(error: BaseException) -> bool:
    """A connection failure of the Hub client's HTTP library (httpx or requests), or huggingface_hub's offline mode."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"ConnectionError", "TransportError", "NetworkError", "TimeoutException", "Timeout"})


def check_arguments(args) -> None:
    """Before the folder is loaded: a token to push with, the network switched on, the folder there."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise CommandError(
            "HF_HUB_OFFLINE is set, so the Hub cannot be reached; unset HF_HUB_OFFLINE to push", ENVIRONMENT
        )
    if not args.token and not get_token():
        raise CommandError(
            "no Hub token: log in with `hf auth login`, set HF_TOKEN, or pass --token (a token with write access)",
            ENVIRONMENT,
        )
    if args.token is not None and not args.token.strip():
        raise CommandError("--token is empty; pass a Hub token, or leave --token out to use HF_TOKEN / the login")
    folder = Path(args.folder)
    if folder.is_dir() and not (folder / "model_index.json").is_file():
        raise CommandError(f"FOLDER {args.folder}: no model_index.json there, so it is not a pipeline folder")


def run(args) -> int:
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    from ldm_hub import LDMPipeline

    check_arguments(args)
    pipe = LDMPipeline.from_pretrained(args.folder)
    if args.base_model:
        pipe.base_model = args.base_model
    try:
        info = pipe.push_to_hub(
            args.repo_id, commit_message=args.commit_message, private=args.private or None, token=args.token,
            create_pr=args.create_pr, variant=args.variant, revision=args.revision, license=args.license,
        )  # fmt: skip
    except HfHubHTTPError as e:
        raise CommandError(f"pushing {args.folder} to Hub repo {args.repo_id!r} failed: {e}") from e
    except Exception as e:
        if not _is_network_error(e):
            raise
        raise CommandError(
            f"pushing {args.folder} to Hub repo {args.repo_id!r} failed: cannot reach the Hub at {constants.ENDPOINT} "
            f"({type(e).__name__}: {e}); check the network connection (or HF_ENDPOINT) and try again",
            ENVIRONMENT,
        ) from e
    print(f"pushed {args.folder} ({pipe.conditioning} model) to {info.repo_url.repo_id} at commit {info.oid}")
    if info.pr_url:
        print(f"pull request: {info.pr_url} (revision {info.pr_revision})")
    return 0
