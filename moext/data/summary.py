"""``moext data summary``: what a database on disk holds, and what the readers made of it.

    moext data summary --dataset casme2 --root /data/CASME2 [--protocol casme2-5] [--json]

For ``--dataset megc2019`` the root holds ``CASME2/``, ``SAMM/`` and ``SMIC/`` (override each with
``--casme2-root``, ``--samm-root``, ``--smic-root``). ``--protocol au`` counts the clips an
action-unit experiment would use. With ``--json`` the output is one JSON object (see
:func:`summarize`). A database that cannot be read prints one line to stderr and exits with
code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from moext.data.protocols import PROTOCOLS, fold_id, select
from moext.data.readers import MEGC2019_FOLDERS, read_dataset
from moext.data.readers.aus import au_name
from moext.data.records import DatasetError, Sample

DEFAULT_PROTOCOLS = {
    "casme2": "casme2-5",
    "samm": "samm-5",
    "smic": "smic-3",
    "casme3": "casme3-3",
    "megc2019": "cde3",
    "synth": "synth-3",
    "casme": "casme-4",
    "mmew": "mmew-7",
    "4dme": "4dme-5",
}
#: Command line options each dataset's reader takes (the others are refused).
READER_OPTIONS = {
    "casme2": ("spreadsheet", "kind", "frames"),
    "samm": ("spreadsheet",),
    "smic": (),
    "casme3": ("spreadsheet", "sheet", "kind"),
    "synth": ("spreadsheet", "macro_spreadsheet", "frames"),
    "megc2019": ("casme2_root", "samm_root", "smic_root", "frames"),
    "casme": ("spreadsheet", "frames"),
    "mmew": ("spreadsheet",),
    "4dme": ("spreadsheet", "frames", "keep_marked_aus"),
}
NO_EMOTION = "(none)"


def au_counts(samples: list[Sample]) -> dict:
    """How the samples' action units are coded.

    ``annotated`` and ``not_annotated`` (clips), ``counts`` (``"AU12"`` -> clips coding it, in
    AU order) and ``per_dataset`` (the same counts per database).
    """

    def count(group: list[Sample]) -> dict[str, int]:
        numbers = Counter(n for s in group for n in s.au_numbers)
        return {au_name(n): numbers[n] for n in sorted(numbers)}

    datasets = sorted({s.dataset for s in samples})
    return {
        "annotated": sum(s.aus is not None for s in samples),
        "not_annotated": sum(s.aus is None for s in samples),
        "counts": count(samples),
        "per_dataset": {d: count([s for s in samples if s.dataset == d]) for d in datasets},
    }


def summarize(
    dataset: str, root: str | Path, protocol: str | None = None, **reader_options: object
) -> dict:
    """Read a database and count what it holds.

    Args:
        dataset: one of ``casme2``, ``samm``, ``smic``, ``casme3``, ``megc2019``, ``synth``,
            ``casme``, ``mmew``, ``4dme``.
        root: the database folder (for ``megc2019`` the folder holding ``CASME2/``, ``SAMM/``,
            ``SMIC/``).
        protocol: label protocol for ``classes``; default :data:`DEFAULT_PROTOCOLS`.
        **reader_options: passed to the reader.

    Returns:
        ``dataset``, ``root``, ``samples`` (number read), ``subjects``, ``kinds`` and
        ``datasets`` (counts), ``emotions`` (label -> count), ``protocol``, ``labelled`` and
        ``labelled_subjects`` (the protocol's samples and subjects), ``classes``
        (class -> count), ``aus`` (:func:`au_counts` of the samples read), and the lists
        ``rejected``, ``corrected`` and ``excluded`` of ``{clip, reason, source}``.

    Raises:
        DatasetError: the database cannot be read.
    """
    result = read_dataset(dataset, root, **reader_options)
    labelled = select(protocol or DEFAULT_PROTOCOLS[dataset], result.samples)
    emotions = Counter(s.emotion or NO_EMOTION for s in result.samples)
    return {
        "dataset": dataset,
        "root": str(root),
        "samples": len(result.samples),
        "subjects": len({fold_id(s) for s in result.samples}),
        "kinds": dict(Counter(s.kind for s in result.samples)),
        "datasets": dict(Counter(s.dataset for s in result.samples)),
        "emotions": dict(sorted(emotions.items(), key=lambda item: (-item[1], item[0]))),
        "protocol": labelled.protocol,
        "labelled": len(labelled),
        "labelled_subjects": len({fold_id(s) for s in labelled.samples}),
        "classes": labelled.class_counts(),
        "aus": au_counts(result.samples),
        "rejected": [asdict(r) for r in result.rejected],
        "corrected": [asdict(c) for c in result.corrected],
        "excluded": [asdict(e) for e in labelled.excluded],
    }


def format_summary(summary: dict) -> str:
    """The summary as readable text."""

    def counts(mapping: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in mapping.items()) or "none"

    lines = [
        f"{summary['dataset']} at {summary['root']}",
        f"  samples    {summary['samples']} ({counts(summary['kinds'])}) "
        f"from {summary['subjects']} subjects",
    ]
    if len(summary["datasets"]) > 1:
        lines.append(f"  databases  {counts(summary['datasets'])}")
    lines += [
        f"  emotions   {counts(summary['emotions'])}",
        f"  protocol   {summary['protocol']}: {summary['labelled']} samples "
        f"from {summary['labelled_subjects']} subjects",
        f"  classes    {counts(summary['classes'])}",
    ]
    aus = summary["aus"]
    lines.append(
        f"  AUs        {aus['annotated']} clips coded, {aus['not_annotated']} not: "
        f"{counts(aus['counts'])}"
    )
    if len(aus["per_dataset"]) > 1:
        lines += [f"             {d}: {counts(c)}" for d, c in aus["per_dataset"].items()]
    excluded = Counter(e["reason"] for e in summary["excluded"])
    lines.append(f"  excluded   {len(summary['excluded'])} by the protocol")
    lines += [f"             {n:4d}  {reason}" for reason, n in excluded.most_common()]
    for key, title in (("rejected", "rejected "), ("corrected", "corrected")):
        lines.append(f"  {title}  {len(summary[key])} rows")
        lines += [f"             {r['clip']} ({r['source']}): {r['reason']}" for r in summary[key]]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moext data summary", description="Summarize a micro-expression database on disk."
    )
    parser.add_argument("--dataset", required=True, choices=sorted(DEFAULT_PROTOCOLS))
    parser.add_argument("--root", required=True, type=Path, help="the database folder")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), help="label protocol for classes")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--spreadsheet", help="annotation spreadsheet: file name or path")
    parser.add_argument("--sheet", help="sheet name (casme3)")
    parser.add_argument("--kind", choices=("micro", "macro", "both"), help="casme2, casme3")
    parser.add_argument(
        "--frames",
        choices=("raw", "cropped", "gray", "color"),
        help="frame folder: raw / cropped (CASME, CASME II), gray / color (4DME)",
    )
    parser.add_argument(
        "--keep-marked-aus",
        action="store_true",
        default=None,
        help="4dme: keep the AU codes marked (k) (default: left out, as MEB does)",
    )
    parser.add_argument("--macro-spreadsheet", help="macro spreadsheet (synth)")
    for name, folder in MEGC2019_FOLDERS.items():
        parser.add_argument(f"--{name}-root", type=Path, help=f"megc2019: instead of ROOT/{folder}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``moext data summary``; ``argv`` starts at ``--dataset``. Returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    given = {
        k: v
        for k, v in vars(args).items()
        if k not in ("dataset", "root", "protocol", "json") and v is not None
    }
    refused = sorted(set(given) - set(READER_OPTIONS[args.dataset]))
    if refused:
        options = ", ".join("--" + k.replace("_", "-") for k in refused)
        parser.error(f"{options} not accepted with --dataset {args.dataset}")
    reads = MEGC2019_FOLDERS if args.dataset == "megc2019" else (args.dataset,)
    if args.protocol and not set(PROTOCOLS[args.protocol].datasets) & set(reads):
        labels = ", ".join(PROTOCOLS[args.protocol].datasets)
        parser.error(f"--protocol {args.protocol} labels {labels} clips, not {args.dataset}'s")
    try:
        summary = summarize(args.dataset, args.root, args.protocol, **given)
    except DatasetError as err:
        print(f"moext data summary: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
