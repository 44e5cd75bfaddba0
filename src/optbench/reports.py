"""The reproduction reports: verdicts -> reports/<paper>.{md,html,json}, and the README's status table from them.

  python -m optbench.reports [reports_dir=reports] [readme=README.md]
      rewrites the README's "Reproduction status" table (between its two markers) from reports/*.json

The JSON is the record (every verdict with its numbers, the command and budget that produced it); the Markdown
and HTML pages are views of it, the HTML with the paper's figures embedded so it can be sent as one file.
"""

from __future__ import annotations

import base64
import html
import json
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from optbench import claims as c

BEGIN, END = "<!-- reproduction-status:begin -->", "<!-- reproduction-status:end -->"
VERDICT_COLOURS = {"reproduced": "#1b7837", "not reproduced": "#b2182b", "not run": "#777777"}


def record(spec: Mapping, verdicts: Sequence[c.Verdict], run: Mapping) -> dict:
    """The report as data: the command's settings (``run``: where, budget, results_dir, elapsed_s, figures ...)
    and one entry per claim."""
    rows = [{"id": v.claim["id"], "statement": v.claim["statement"], "source": v.claim["source"],
             "kind": v.claim["kind"], "metric": v.claim["metric"], "where": v.claim["where"],
             "substitute": v.claim.get("substitute", ""), "paper": c.paper_number(v.claim), "optbench": v.ours,
             "verdict": v.verdict, "why": v.why, "runs": [str(p) for p in v.paths]} for v in verdicts]
    return {"paper": spec["paper"], "title": spec.get("title") or spec["paper"], **run, "claims": rows}


def _run_name(path: str) -> str:
    """optim/variant/seedN: what tells a claim's run directories apart."""
    return "/".join(Path(path).parts[-3:])


def _runs_cell(paths: Sequence[str], base: Path) -> str:
    return "<br>".join(f"[{_run_name(p)}]({os.path.relpath(p, base)})" for p in paths)


def claims_frame(report: Mapping, base: Path, markdown: bool = True) -> pd.DataFrame:
    """One row per claim: claim, the paper's number, optbench's, the verdict (with why), links to the runs."""
    frame = pd.DataFrame(report["claims"])
    verdict = frame["verdict"] + frame["why"].map(lambda why: f" ({why})" if why else "")
    runs = frame["runs"].map(lambda paths: _runs_cell(paths, base) if markdown else "<br>".join(
        f'<a href="{html.escape(os.path.relpath(p, base))}">{html.escape(_run_name(p))}</a>' for p in paths))
    out = pd.DataFrame({"claim": frame["id"], "paper": frame["paper"], "optbench": frame["optbench"].replace("", "—"),
                        "verdict": verdict, "runs": runs})
    if markdown:
        out = out.apply(lambda col: col.astype(str).str.replace("|", "\\|").str.replace("\n", " "))
    return out


def _command(report: Mapping) -> str:
    return (f"python -m optbench.reproduce paper={report['paper']} where={report['where']} "
            f"budget={report['budget']}")


def markdown(report: Mapping, base: Path) -> str:
    """reports/<paper>.md: the verdict table, the figures, then each claim's statement, source and substitute."""
    counts = pd.Series([r["verdict"] for r in report["claims"]]).value_counts()
    lines = [f"# Reproduction report: {report['title']}", "",
             f"Computed by `{_command(report)}` from the runs under `{report['results_dir']}` in "
             f"{report['elapsed_s']:.0f} s; verdicts are computed from the runs' metrics.csv, never written by hand. "
             f"Numbers: mean ± std over seeds (n seeds). {', '.join(f'{n} {v}' for v, n in counts.items())}.", "",
             claims_frame(report, base).to_markdown(index=False), ""]
    if report.get("figures"):
        lines += ["## Figures", ""] + [f"![{Path(f).stem}]({os.path.relpath(f, base)})" for f in report["figures"]]
        lines.append("")
    lines += [f"Not drawn: {why}" for why in report.get("figures_failed", [])]
    lines += ["## Claims", ""]
    for row in report["claims"]:
        lines.append(f"- **{row['id']}** ({row['source']}; {row['kind']} of `{row['metric']}`, where {row['where']}):"
                     f" {row['statement']}" + (f" Substitute: {row['substitute']}." if row["substitute"] else ""))
    return "\n".join(lines) + "\n"


def _embedded(path: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}"></figure>'


def html_page(report: Mapping, base: Path) -> str:
    """reports/<paper>.html: the same table, verdicts coloured, the figures embedded (one self-contained file)."""
    table = claims_frame(report, base, markdown=False)
    table["verdict"] = [f'<b style="color:{VERDICT_COLOURS[r["verdict"]]}">{html.escape(text)}</b>'
                        for r, text in zip(report["claims"], table["verdict"])]
    for col in ("claim", "paper", "optbench"):
        table[col] = table[col].map(lambda text: html.escape(str(text)))
    claims = "".join(f"<li><b>{html.escape(r['id'])}</b> ({html.escape(r['source'])}): {html.escape(r['statement'])}"
                     + (f" <i>Substitute: {html.escape(r['substitute'])}.</i>" if r["substitute"] else "") + "</li>"
                     for r in report["claims"])
    figures = "".join(_embedded(f) for f in report.get("figures", []) if f.endswith(".png"))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report['title'])}</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px;vertical-align:top}img{max-width:100%}</style></head><body>"
            f"<h1>Reproduction report: {html.escape(report['title'])}</h1><p>Computed by "
            f"<code>{html.escape(_command(report))}</code> from the runs under "
            f"<code>{html.escape(report['results_dir'])}</code>.</p>"
            f"{table.to_html(index=False, escape=False)}<h2>Figures</h2>{figures or '<p>none drawn</p>'}"
            f"<h2>Claims</h2><ul>{claims}</ul></body></html>\n")


def write(report: Mapping, reports_dir: str | Path) -> list[Path]:
    """reports_dir/<paper>.{json,md,html}; links inside are relative to reports_dir."""
    base = Path(reports_dir)
    base.mkdir(parents=True, exist_ok=True)
    paths = [base / f"{report['paper']}.{ext}" for ext in ("json", "md", "html")]
    paths[0].write_text(json.dumps(report, indent=1) + "\n")
    paths[1].write_text(markdown(report, base))
    paths[2].write_text(html_page(report, base))
    return paths


def short_reason(why: str) -> str:
    """'data missing: FashionMNIST not found: expected ...' -> 'data missing'; 'needs a GPU (where=gpu)' ->
    'needs a GPU': the status table's cell, the report keeps the whole reason."""
    return why.split(":")[0].split(" (")[0]


def status_frame(reports_dir: str | Path) -> pd.DataFrame:
    """Every claim of every report under reports_dir: paper, claim, verdict, where, budget."""
    rows = []
    for path in sorted(Path(reports_dir).glob("*.json")):
        report = json.loads(path.read_text())
        rows += [{"paper": report["paper"], "claim": r["id"], "verdict": r["verdict"] + (
            f": {short_reason(r['why'])}" if r["verdict"] == "not run" else ""), "optbench": r["optbench"] or "—",
            "budget": report["budget"]} for r in report["claims"]]
    return pd.DataFrame(rows, columns=["paper", "claim", "verdict", "optbench", "budget"])


def status_section(reports_dir: str | Path) -> str:
    """The README's table: one row per claim, and the tally per paper."""
    frame = status_frame(reports_dir)
    if frame.empty:
        raise SystemExit(f"optbench.reports: no reports (*.json) under {reports_dir}; run `bash scripts/reproduce.sh`")
    tally = frame.assign(verdict=frame["verdict"].str.split(":").str[0]).groupby("paper")["verdict"]
    summary = "; ".join(f"{paper}: " + ", ".join(f"{n} {v}" for v, n in counts.value_counts().items())
                        for paper, counts in tally)
    body = frame.apply(lambda col: col.astype(str).str.replace("|", "\\|")).to_markdown(index=False)
    budget = "/".join(sorted(frame["budget"].unique()))
    return (f"{BEGIN}\nGenerated from `{reports_dir}/*.json` by `BUDGET={budget} bash scripts/reproduce.sh && "
            f"python -m optbench.reports readme=README.md` ({summary}).\n\n{body}\n{END}")


def update_readme(readme: str | Path, reports_dir: str | Path) -> None:
    """Replace the README's text between the two markers with the status section."""
    text = Path(readme).read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"optbench.reports: {readme} has no {BEGIN} ... {END} markers; add them where the table goes")
    head, rest = text.split(BEGIN, 1)
    Path(readme).write_text(head + status_section(reports_dir) + rest.split(END, 1)[1])


def main(argv: Sequence[str]) -> int:
    args = {"reports_dir": "reports", "readme": None}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in args:
            raise SystemExit(f"optbench.reports: unknown argument {arg!r} (keys: {', '.join(args)})")
        args[key] = value
    if args["readme"]:
        update_readme(args["readme"], args["reports_dir"])
        print(f"optbench.reports: updated {args['readme']} from {args['reports_dir']}")
    else:
        print(status_section(args["reports_dir"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
