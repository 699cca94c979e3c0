"""Run the whole benchmark suite and regenerate the book's "Performance" appendix.

    python benchmarks/run.py                 # the suite (a few minutes on 2 CPU cores)
    python benchmarks/run.py --end-to-end    # also the VAE full-mode pipeline (about 10 more minutes)
    python benchmarks/run.py --smoke --out /tmp/bench   # toy sizes: checks the scripts (CI)
    python benchmarks/run.py --render-only   # rewrite the page from the stored numbers (text changes)

Writes ``book/appendix/performance.md`` and its figure (or into ``--out``) and the raw
numbers to ``benchmarks/results/latest.json``. Every ratio is measured inside one run, on
this machine, whose description heads the page. The end-to-end pipeline takes as long as it
takes, so it runs only with ``--end-to-end``; otherwise the page shows the last stored
measurement (``benchmarks/results/end_to_end.json``) with its date and machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
if "SA_DATA_DIR" not in os.environ and (ROOT.parent / "shared" / "data" / "MNIST" / "raw").exists():
    os.environ["SA_DATA_DIR"] = str(ROOT.parent / "shared" / "data")  # the project machines' offline MNIST

import diffusion_fisher  # noqa: E402
import end_to_end  # noqa: E402
import fisher  # noqa: E402
import sa_step  # noqa: E402
import scaling  # noqa: E402
from common import machine, markdown_table, print_table  # noqa: E402

E2E_JSON = HERE / "results" / "end_to_end.json"
CHAPTER_JSON = HERE / "results" / "chapter_times.json"


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="toy sizes, for CI: checks that every benchmark runs")
    p.add_argument("--end-to-end", action="store_true", help="also run the VAE full-mode pipeline and store it")
    p.add_argument("--out", type=Path, default=ROOT / "book" / "appendix", help="folder for the page and its figure")
    p.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the page and figure from benchmarks/results/latest.json without measuring anything",
    )
    p.add_argument(
        "--only",
        choices=["diffusion_fisher"],
        help="measure only this section; the others keep the values of benchmarks/results/latest.json",
    )
    args = p.parse_args(argv)
    if args.only:
        res = json.loads((HERE / "results" / "latest.json").read_text())
        res["diffusion_fisher"] = diffusion_fisher.run(samples=2, timesteps=1000)
        res["diffusion_fisher_run"] = {"date": datetime.date.today().isoformat(), "machine": machine()}
        print_table("6. Exact diffusion Fisher", *diffusion_fisher.table_rows(res["diffusion_fisher"]))
        (HERE / "results" / "latest.json").write_text(json.dumps(res, indent=2) + "\n")
        args.render_only = True
    if args.render_only:
        res = json.loads((HERE / "results" / "latest.json").read_text())
        scaling.plot(res["scaling"], args.out / "performance_scaling.png")
        page = args.out / "performance.md"
        page.write_text(render(res, args))
        print(f"re-rendered {page} from the run of {res['date']}")
        return page
    start = time.perf_counter()
    res = {"machine": machine(), "date": datetime.date.today().isoformat(), "smoke": args.smoke}
    if args.smoke:
        res["fisher"] = fisher.run(samples=100, repeats=1, ddpm_samples=16)
        res["sa_step"] = sa_step.run(steps=4, repeats=1)
        res["diffusion_fisher"] = diffusion_fisher.run(samples=1, timesteps=20)
    else:
        res["fisher"] = fisher.run(samples=1000, repeats=3)
        res["sa_step"] = sa_step.run(steps=20, repeats=5)
        res["diffusion_fisher"] = diffusion_fisher.run(samples=2, timesteps=1000)
    print_table("1. Diagonal Fisher", *fisher.table_rows(res["fisher"]))
    print_table("6. Exact diffusion Fisher", *diffusion_fisher.table_rows(res["diffusion_fisher"]))
    print_table("2 and 4. SA step vs fine-tuning step", *sa_step.table_rows(res["sa_step"]))
    res["scaling"] = scaling.run(smoke=args.smoke)
    args.out.mkdir(parents=True, exist_ok=True)
    scaling.plot(res["scaling"], args.out / "performance_scaling.png")
    if args.end_to_end or args.smoke:
        e2e = end_to_end.run("smoke" if args.smoke else "full")
        if not args.smoke:
            E2E_JSON.parent.mkdir(parents=True, exist_ok=True)
            E2E_JSON.write_text(json.dumps(e2e, indent=2) + "\n")
    else:
        e2e = json.loads(E2E_JSON.read_text()) if E2E_JSON.exists() else None
    res["end_to_end"] = e2e
    if e2e:
        print_table("3. VAE pipeline end to end", *end_to_end.table_rows(e2e))
    res["suite_seconds"] = time.perf_counter() - start
    page = args.out / "performance.md"
    page.write_text(render(res, args))
    if not args.smoke:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "latest.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nsuite took {res['suite_seconds']:.0f} s; wrote {page}")
    return page


def chapter_times_section(path: Path = CHAPTER_JSON, stages: int = 3) -> list[str]:
    """Section 7 from ``tools/timing.py``'s stored results: each chapter cold and warm, its slowest stages."""
    lines = ["## 7. The chapters, cold and warm", ""]
    if not path.exists():
        return lines + ["Not measured yet: run `python tools/timing.py`.", ""]
    t = json.loads(path.read_text())
    cold, warm = t["cold"], t.get("warm")
    fmt_load = lambda p: (
        "n/a"
        if not p.get("load_before")
        # noqa: E731
        else (f"load average {p['load_before'][0]:.2f} before, {p['load_after'][0]:.2f} after")
    )
    lines += [
        f"Measured by `python tools/timing.py` on {t['date']} ({t['machine']}), quick mode, {t['jobs']} lane(s)"
        " (tools/book.py: each part in its own process). *Cold* starts from an empty cache, as a clean clone does;",
        "*warm* runs every chapter again on the cache the cold pass filled. A stage is one code cell, named by its",
        "first line; the three slowest of each chapter (cold) are listed.",
        "",
    ]
    if cold.get("note"):
        lines += [f"Cold times: {cold['note']}.", ""]
    rows = []
    for name, ch in cold["chapters"].items():
        w = (warm or {}).get("chapters", {}).get(name)
        top = sorted(ch["cells"], key=lambda c: -c["seconds"])[:stages]
        label = lambda c: c["label"].replace("|", "\\|").replace("`", "")[:60]  # noqa: E731
        rows.append(
            [
                name,
                f"{ch['seconds']:.0f}",
                f"{w['seconds']:.0f}" if w else "not run",
                "; ".join(f"{label(c)} ({c['seconds']:.0f} s)" for c in top),
            ]
        )
    lines += [markdown_table(["chapter", "cold s", "warm s", "slowest stages (cold)"], rows), ""]
    for key, p in (("cold", cold), ("warm", warm)):
        if p and p.get("wall_seconds") is not None:
            lines.append(
                f"- {key} pass: {p['wall_seconds']:.0f} s of wall time for all of the above in parallel lanes; "
                f"{fmt_load(p)}."
            )
    return lines + [""]


def lanes_text(t: dict) -> list[str]:
    import lanes

    return [
        "The same work twice: one run after the other with every torch thread, and two runs at the same time with",
        "half the threads each (the work's own seconds, process start-up excluded). `tools/book.py --jobs 2` runs two",
        "parts of the book that way.",
        "",
        markdown_table(*lanes.table_rows(t["rows"])),
        "",
        "Measured gain of two lanes on the work itself: "
        + ", ".join(f"{r['work']} {r['ratio']:.2f}x" for r in t["rows"])
        + ". It is paid back only while both lanes are busy: the book's three parts take different times, so the",
        "lane that finishes first leaves a core idle while the other runs on one thread. `make book` and `make test`",
        "therefore run one chapter at a time on every core (`SA_BOOK_JOBS=2` to try two lanes).",
        "",
    ]


def sampler_text(t: dict) -> list[str]:
    import sampler_steps

    return [
        f"The shipped MNIST DDPM, {t['per_class']} guided samples per digit for each seed ({t['threads']} torch "
        "threads),",
        "scored by the independent classifier as in chapter 7. A step count whose numbers differ from 25 steps' by",
        "less than the two seeds differ from each other is, by this yardstick, as good as 25; quick mode uses 10.",
        "",
        markdown_table(*sampler_steps.table_rows(t["rows"])),
        "",
        *sampler_verdict(t["rows"]),
    ]


def sampler_verdict(rows: list[dict]) -> list[str]:
    """For each step count: its largest same-seed difference from 25 steps, next to the seeds' own spread."""
    ref = {r["seed"]: r for r in rows if r["steps"] == 25}
    if len(ref) < 2:
        return []
    out = []
    for m in ("acc_remember", "p_forget", "fd_remember"):
        spread = max(r[m] for r in ref.values()) - min(r[m] for r in ref.values())
        diffs = {
            k: max(abs(r[m] - ref[r["seed"]][m]) for r in rows if r["steps"] == k and r["seed"] in ref)
            for k in sorted({r["steps"] for r in rows} - {25})
        }
        out.append(
            f"- {m}: seed-to-seed spread at 25 steps {spread:.3f}; largest difference from 25 steps at the same seed: "
            + ", ".join(
                f"{k} steps {d:.3f}" + (" (within the spread)" if d <= spread else " (**outside** the spread)")
                for k, d in diffs.items()
            )
            + "."
        )
    return out + [""]


def sa_schedule_text(t: dict) -> list[str]:
    import sa_schedule

    return [
        "Chapter 5's four ablation arms (forget 0, uniform noise, learning rate 1e-3, batch 128), each forgotten model",
        f"scored with 500 samples per digit at two evaluation seeds ({t['threads']} torch threads). A step count whose",
        "numbers differ from the longest schedule's by less than the two evaluation seeds differ from each other",
        "changes nothing chapter 5 reports by that yardstick. Quick mode's short schedule (the ablation, the lambda "
        "sweep,",
        "chapter 4's forgetting arms, chapter 6's demo) stays at 1,500 steps because of the differences marked below",
        "(when session 9 ran chapter 5 at 750 steps, faint 0s were visible in its surrogate + replay and full-SA "
        "grids).",
        "",
        markdown_table(*sa_schedule.table_rows(t["rows"])),
        "",
        *sa_schedule.verdict(t["rows"]),
    ]


def optimizer_text(t: dict) -> list[str]:
    rows = t["rows"]
    lines = [
        "The SA step as it was before session 11 (PyTorch's default Adam, separate forward and backward passes for",
        "the forget and the replay batch) against the step with PyTorch's fused Adam kernel (`SAConfig(fused=True)`,",
        "now the default) and against fused Adam plus one pass on the two batches joined (the adapters that set",
        "`joint_batches`: the CVAE). All arms train a fresh copy on the same batches and noise; time is the median of",
        f"{t['repeats']} interleaved repeats; the last column is how far each arm's weights end up from the old step's",
        "after the run, next to how far training moved them: rounding, not a different algorithm.",
        "",
        f"Machine: {t['machine']}.",
        "",
        markdown_table(*sa_step.optimizer_table(rows)),
        "",
    ]
    for r in rows:
        lines.append(
            f"- {r['model']}: {r['speedup']:.2f}x per SA step in all"
            + (
                f" ({r['fused_speedup']:.2f}x from the fused kernel alone)"
                if r["joint_batches"]
                else " (fused kernel only; this adapter does not join batches)"
            )
            + "."
        )
    return lines + [""]


def stored_section(title: str, name: str, command: str, body, missing: str | None = None) -> list[str]:
    """A section shown from ``benchmarks/results/<name>.json`` (written by its own command)."""
    path = HERE / "results" / f"{name}.json"
    lines = [f"## {title}", ""]
    if not path.exists():
        return lines + [missing or f"Not measured yet: run `{command}`.", ""]
    t = json.loads(path.read_text())
    return lines + [f"Measured by `{command}` on {t['date']}.", ""] + body(t)


def gpu_check_text(t: dict) -> list[str]:
    """Section 12 from ``benchmarks/results/gpu_check.json`` (``benchmarks/gpu_check.py`` on a lent GPU)."""
    m, sec = t["machine"], t["sections"]
    lines = [f"Device: {m['device']} ({m.get('gpu_memory_gib', 0):.0f} GiB), torch {m['torch']}, CUDA {m['cuda']}."]
    if t.get("smoke"):
        lines.append("**This is a smoke run (tiny sizes): its figures say nothing about a GPU.**")
    rows = []
    vae = sec.get("vae", {})
    if "sa_ms_per_step" in vae:
        rows.append(
            [
                "VAE, authors' SA settings",
                f"{vae['sa_ms_per_step']:.1f} ms / step",
                f"{vae['peak_gib']:.2f}" if vae.get("peak_gib") else "-",
                f"Fisher of {vae['fisher_samples']:,} samples: {vae['fisher_s']:.1f} s",
            ]
        )
    ddpm = sec.get("ddpm", {})
    if "sa_s_per_step" in ddpm:
        rows.append(
            [
                f"CIFAR-10 DDPM ({ddpm['params']:,} parameters), batch {ddpm['batch']}",
                f"{ddpm['sa_s_per_step']:.3f} s / step",
                f"{ddpm['peak_gib']:.2f}" if ddpm.get("peak_gib") else "-",
                f"exact Fisher ({ddpm['fisher_timesteps']}): {ddpm['fisher_s_per_image']:.1f} s / image",
            ]
        )
    sd = sec.get("sd", {})
    for method, row in sd.get("train_methods", {}).items():
        fit = ", ".join(k for k, ok in (row.get("fits") or {}).items() if ok) or "none of 16-80 GB"
        rows.append(
            [
                f"SD v1.4 512x512, {method}",
                f"{row['sa_s_per_step']:.2f} s / step",
                f"{row['peak_gib']:.2f}" if row.get("peak_gib") else "-",
                f"fits: {fit}",
            ]
        )
    if "fisher" in sd:
        rows.append(
            [
                "SD v1.4 exact Fisher",
                "-",
                "-",
                f"{sd['fisher']['s_per_image_exact_extrapolated']:.0f} s / image (from "
                f"{sd['fisher']['timesteps_measured']} timesteps)",
            ]
        )
    for name, s in sec.items():
        if "error" in s or "skipped" in s:
            rows.append([name, "-", "-", s.get("error") or s.get("skipped")])
    return lines + ["", markdown_table(["run", "time", "peak GiB", "notes"], rows), ""]


def render(res: dict, args) -> str:
    f, s, sc, e2e = res["fisher"], res["sa_step"], res["scaling"], res["end_to_end"]
    cvae_f = next(r for r in f if r["model"] == "cvae")
    cvae_s = next(r for r in s if r["model"] == "cvae")
    (h1, r1), (h2, r2) = scaling.table_rows(sc)
    lines = [
        "(appendix-performance)=",
        "# Performance",
        "",
        "This page is written by `python benchmarks/run.py`; do not edit it by hand. Every ratio on it was",
        "measured within one run of that command, so the machine's load affects both sides of each ratio alike.",
        "",
        f"- machine: {res['machine']}",
        f"- date: {res['date']}" + (" (smoke run: toy sizes, the numbers say nothing)" if res["smoke"] else ""),
        f"- the suite took {res['suite_seconds']:.0f} s",
        "",
        "## 1. The diagonal Fisher",
        "",
        "Seconds per 1,000 samples for the authors' method (one backward pass per sample), the project's method",
        "(chapter 3 for the CVAE's linear-layer identity; chapter 7 for the UNets' vectorised per-sample gradients)",
        "and one plain batched forward+backward pass over the same 1,000 samples, which is the practical lower bound:",
        "it yields the gradient of the batch sum, not per-sample squares. Both Fisher methods see the same samples",
        "and noise; *max rel. diff* is their largest disagreement (per tensor, relative to its largest entry).",
        "",
        markdown_table(*fisher.table_rows(f)),
        "",
        f"On the CVAE the project's Fisher is {cvae_f['speedup']:.0f}x faster than the loop and "
        f"{cvae_f['vs_plain']:.1f}x the cost of the plain pass. On the UNet, per-sample gradients cannot use the",
        "linear identity (convolutions, normalisation and attention mix samples' activations in ways the identity does",
        "not cover), so the project vectorises the per-sample backward with `torch.func.vmap` in chunks of 16; the "
        "gain",
        "over the loop is smaller on a CPU, where a single sample's backward already keeps the cores busy. The `sd` "
        "row",
        "is Part III's tiny Stable Diffusion UNet (cross-attention to 77 prompt-embedding tokens) on 8x8x4 latents.",
        "",
        "## 2 and 4. One SA step vs one plain fine-tuning step",
        "",
        "Both train a fresh copy of the model on the same forget and replay batches with Adam. The SA step is",
        "`selective_amnesia` itself (EWC gradient, NaN guard, logging); fine-tuning is a bare loop. Time is the",
        "median over interleaved repeats. Peak memory counts every live tensor's bytes (parameters, gradients, Adam",
        "state, activations, temporaries, and the Fisher, which SA needs and fine-tuning does not).",
        "",
        markdown_table(*sa_step.table_rows(s)),
        "",
        "The EWC gradient, 2λF(θ−θ*), is added into `.grad` with fused `torch._foreach_*` kernels, in groups of about",
        "1/8 of the model so the temporary stays small; the penalty's value is computed only on logged steps. What SA "
        "must hold beyond",
        "fine-tuning is θ* and F: two parameter-sized buffers, which no implementation of EWC can avoid. The",
        "*EWC floor* column is fine-tuning's peak plus exactly those two buffers.",
    ]
    if cvae_s["memory_ratio"] > 1.3:
        lines += [
            f"On the CVAE the memory ratio, {cvae_s['memory_ratio']:.2f}, misses the 1.3 target while sitting at that "
            "floor",
            f"({cvae_s['memory_floor']:.2f}): with 1.1M parameters and a batch of 256 the activations are small next "
            "to",
            "the parameter-sized state, so two more parameter-sized buffers weigh a lot. Models whose activations "
            "dominate,",
            "such as the UNets, pay almost nothing extra.",
        ]
    lines += ["", "## 3. End to end: the VAE chapter in full mode", ""]
    if e2e:
        st = e2e["settings"]
        lines += [
            f"Chapter 5's full-mode pipeline with the authors' settings (CVAE {st['cvae_epochs']} epochs, classifier "
            f"{st['classifier_epochs']} epochs, Fisher over {st['fisher_samples']:,} samples, {st['sa_steps']:,} SA "
            "steps at batch "
            f"{st['sa_batch']}, evaluation on {st['eval_per_class']:,} samples per digit), in an empty cache. "
            "Measured by "
            f"`python benchmarks/run.py --end-to-end` on {e2e['date']}"
            + ("" if e2e["machine"] == res["machine"] else f" ({e2e['machine']})")
            + ".",
            "",
            markdown_table(*end_to_end.table_rows(e2e)),
            "",
            "After SA: " + ", ".join(f"{k} = {v:.3f}" for k, v in e2e["metrics"].items()) + ".",
        ]
    else:
        lines += ["Not measured yet: run `python benchmarks/run.py --end-to-end`."]
    lines += ["", "## 6. The exact diffusion Fisher: batched vs the authors' loop", ""]
    if res.get("diffusion_fisher"):
        d = res["diffusion_fisher"]
        lines += [
            "The authors' diffusion Fisher adds each sample's loss over all T timesteps (fresh noise at each) before",
            "squaring the gradient (chapter 7). Their code runs one forward and backward pass per timestep; the "
            "project",
            "puts the noised copies of a sample through the network 125 at a time, one backward pass per chunk. Same",
            "samples, same noise, same numbers (*max rel. diff*); seconds per sample, both columns measured in one run"
            + (
                f" of `--only diffusion_fisher` on {res['diffusion_fisher_run']['date']} "
                f"({res['diffusion_fisher_run']['machine']}),"
                " separately from the sections above:"
                if res.get("diffusion_fisher_run")
                else ":"
            ),
            "",
            markdown_table(*diffusion_fisher.table_rows(d)),
            "",
            "Measured speed-up: " + ", ".join(f"{r['model']} {r['speedup']:.1f}x" for r in d) + ".",
            ("On this machine batching saves less than half the time; " if min(r["speedup"] for r in d) < 2 else "")
            + "The exact Fisher still costs about T network passes per sample, which is why quick mode uses the",
            "stratified estimate whose error chapter 7 measures.",
        ]
    else:
        lines += ["Not measured in the run that wrote this page: run `python benchmarks/run.py`."]
    lines += [
        "",
        "## 5. Scaling",
        "",
        "```{figure} performance_scaling.png",
        ":name: fig-performance-scaling",
        "",
        "(a) Fisher time vs number of samples on the CVAE; (b) Fisher seconds per 1,000 samples vs parameter count for",
        "the CVAE and the DDPM UNet at several widths; (c) milliseconds per SA step and per plain fine-tuning step vs",
        "parameter count. All points measured in the run that wrote this page.",
        "```",
        "",
        markdown_table(h1, r1),
        "",
        markdown_table(h2, r2),
        "",
        *chapter_times_section(),
        *stored_section("8. Two chapters at once?", "lanes", "python benchmarks/lanes.py", lanes_text),
        *stored_section(
            "9. How many DDIM steps chapter 7 needs",
            "sampler_steps",
            "python benchmarks/sampler_steps.py",
            sampler_text,
        ),
        *stored_section(
            "10. How many SA steps Part I's short schedule needs",
            "sa_schedule",
            "python benchmarks/sa_schedule.py",
            sa_schedule_text,
        ),
        *stored_section(
            "11. Fused Adam and joined batches in the SA step",
            "sa_optimizers",
            "python benchmarks/sa_step.py --optimizers --store",
            optimizer_text,
        ),
        *stored_section(
            "12. The GPU check",
            "gpu_check",
            "python benchmarks/gpu_check.py --out DIR",
            gpu_check_text,
            missing="Not run yet: no GPU machine has been lent to this project's sessions so far. "
            "`benchmarks/gpu_check.py` is the one command to run when one is (CONTRIBUTING.md, "
            "\"When a GPU is lent\"): the VAE at the authors' SA settings, the authors' CIFAR-10 UNet and "
            "Stable Diffusion v1.4's real components at 512x512 (step time, peak memory, the fit on "
            "16 / 24 / 40 / 80 GB cards, the exact Fisher's seconds per image); its JSON, copied to "
            "`benchmarks/results/gpu_check.json`, fills this section.",
        ),
        "## Reproduce",
        "",
        "```bash",
        "make benchmark                               # = python benchmarks/run.py",
        "python benchmarks/run.py --end-to-end        # also the full VAE pipeline",
        "python benchmarks/fisher.py --models ddpm    # one benchmark on its own",
        "python benchmarks/diffusion_fisher.py        # exact diffusion Fisher: batched vs the authors' loop",
        "python tools/timing.py                       # section 7: every chapter cold and warm, per stage",
        "python benchmarks/lanes.py                   # section 8: two chapters at once vs one after the other",
        "python benchmarks/sampler_steps.py           # section 9: DDIM steps vs sample quality",
        "python benchmarks/sa_schedule.py             # section 10: Part I SA steps vs the ablation's numbers",
        "python benchmarks/sa_step.py --optimizers --store  # section 11: fused Adam, joined batches",
        "python benchmarks/gpu_check.py --out DIR     # section 12: on a lent GPU, once (CONTRIBUTING.md)",
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
