"""`longctx assets lock|fetch|verify`: pin, download and check the full profile's models and data."""

from __future__ import annotations

from pathlib import Path

from longctx.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("assets", help="pinned models and data of the full profile (docker/assets.json)")
    asub = p.add_subparsers(dest="assets_command", required=True)
    common = {
        "--only": {"default": "", "help": "comma-separated asset names (default: every non-optional asset)"},
        "--lock": {"type": Path, "default": None, "help": "lock file (default docker/assets.lock.json)"},
        "--cache-dir": {"default": None, "help": "Hugging Face hub cache (default: HF_HUB_CACHE or HF_HOME/hub)"},
    }
    lock = asub.add_parser("lock", help="resolve docker/assets.json to commit shas and file sha256 (needs network)")
    fetch = asub.add_parser(
        "fetch",
        help="download the pinned files into the HF cache and verify them (assets not in the lock yet: against the "
        "Hub's hashes at the pinned commit, then written to the lock)",
    )
    for parser in (lock, fetch):
        parser.add_argument("--manifest", type=Path, default=None, help="manifest (default docker/assets.json)")
    verify = asub.add_parser("verify", help="check the offline HF cache against the lock (no network)")
    verify.add_argument("--quick", action="store_true", help="check presence and sizes only, skip sha256")
    for parser, func in ((lock, run_lock), (fetch, run_fetch), (verify, run_verify)):
        for flag, kwargs in common.items():
            parser.add_argument(flag, **kwargs)
        parser.set_defaults(func=func)


def run_verify(args) -> int:
    from longctx import assets as A

    cache = A.hub_cache_dir(args.cache_dir)
    statuses = A.verify(A.select(A.load_lock(args.lock), args.only), cache, quick=args.quick)
    _print_table(statuses, cache)
    bad = [s for s in statuses if not s.ok]
    for s in bad:
        print(f"  {s.asset.name}: {s.state}: {'; '.join(s.problems[:5])}; get it with `{s.fix_command}`")
    if bad:
        named = ", ".join(f"{s.asset.name} ({s.asset.repo}: {s.state})" for s in bad)
        raise UsageError(f"{len(bad)} of {len(statuses)} assets not usable: {named}; the commands are listed above")
    print(f"all {len(statuses)} assets present and verified in {cache}")
    return 0


def run_fetch(args) -> int:
    """Fetch the chosen assets; those the lock does not list yet are checked against the Hub's metadata at their
    pinned commit and written to the lock one by one, so an interrupted fetch keeps what it has verified."""
    from longctx import assets as A

    cache = A.hub_cache_dir(args.cache_dir)
    lock_path = args.lock or A.default_path(A.LOCK_NAME)
    lock = A.load_lock(lock_path)
    chosen = A.select(lock, args.only)
    unpinned = [a.name for a in chosen if not a.pinned]
    if unpinned:
        raise UsageError(
            f"not pinned to a commit: {', '.join(unpinned)}; run `longctx assets lock --only {','.join(unpinned)}` "
            "(needs network) and commit docker/assets.lock.json"
        )
    unlocked = [a.name for a in chosen if not a.locked]
    manifest = _manifest_entries(args.manifest, unlocked, lock) if unlocked else {}
    known = A.human_size(sum(a.size for a in chosen))
    print(f"fetching {len(chosen)} assets ({known}{' + those not locked yet' if unlocked else ''}) into {cache}")
    downloader = A.HubDownloader()
    resolver = A.HubResolver() if unlocked else None
    statuses = []
    for asset in chosen:
        if asset.locked:
            print(
                f"- {asset.name}: {asset.repo}@{asset.revision} ({len(asset.files)} files, {A.human_size(asset.size)})"
            )
            statuses.append(A.fetch_asset(asset, cache, downloader))
            continue
        print(f"- {asset.name}: {asset.repo}@{asset.revision} (not in the lock: checked against the Hub's file hashes)")
        status = A.fetch_unlocked_asset(asset.name, manifest[asset.name], cache, resolver, downloader)
        lock[asset.name] = status.asset
        A.write_lock(lock_path, lock, "longctx assets fetch (hashes from the Hub's metadata at the pinned commit)")
        print(f"  locked {len(status.asset.files)} files ({A.human_size(status.asset.size)}) in {lock_path}")
        statuses.append(status)
    _print_table(statuses, cache)
    return 0


def _manifest_entries(manifest_path: Path | None, names: list[str], lock: dict) -> dict[str, dict]:
    """The manifest entries of assets the lock does not list yet; each must pin the commit the lock names."""
    from longctx import assets as A

    manifest = A.load_manifest(manifest_path)["assets"]
    for name in names:
        pinned = manifest.get(name, {}).get("revision")
        if pinned != lock[name].revision:
            raise UsageError(
                f"asset {name}: the lock pins {lock[name].revision}, the manifest {pinned}; "
                f"run `longctx assets lock --only {name}` (needs network)"
            )
    return {name: manifest[name] for name in names}


def run_lock(args) -> int:
    from longctx import assets as A

    manifest = A.load_manifest(args.manifest)["assets"]
    lock_path = args.lock or A.default_path(A.LOCK_NAME)
    current = A.load_lock(lock_path) if Path(lock_path).exists() else {}
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(manifest)
    unknown = [n for n in names if n not in manifest]
    if unknown:
        raise UsageError(f"unknown asset(s) {', '.join(unknown)}; known: {', '.join(manifest)}")
    resolver, downloader = A.HubResolver(), A.HubDownloader()
    cache = A.hub_cache_dir(args.cache_dir)
    locked = {n: current.get(n) or A.unlocked_asset(n, spec) for n, spec in manifest.items()}
    for name in names:
        print(f"locking {name}: {manifest[name]['repo']}@{manifest[name].get('revision') or 'main'}")
        locked[name] = A.lock_asset(name, manifest[name], resolver, downloader, cache)
    A.write_lock(lock_path, locked, "longctx assets lock")
    print(f"wrote {lock_path}: {sum(a.locked for a in locked.values())}/{len(locked)} assets locked")
    return 0


def _print_table(statuses, cache) -> None:
    from rich.console import Console
    from rich.table import Table

    from longctx.assets import human_size

    table = Table(title=f"assets in {cache}")
    for col in ("asset", "repo", "revision", "files", "size", "state"):
        table.add_column(col)
    for s in statuses:
        a = s.asset
        table.add_row(a.name, a.repo, str(a.revision)[:12], str(len(a.files)), human_size(a.size), s.state)
    Console(width=110).print(table)


if __name__ == "__main__":
    # `python -m longctx.commands.assets fetch ...`: this subcommand alone. The image's assets stage copies only
    # the few modules it needs, so editing the rest of the code does not invalidate the downloaded weights.
    import sys

    from longctx import cli

    cli.SUBCOMMAND_MODULES = ("longctx.commands.assets",)
    raise SystemExit(cli.main(["assets", *sys.argv[1:]]))
