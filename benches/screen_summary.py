"""Text of an `mlff-md screen` summary.json for the bench scripts' summaries
(benches/gpu_screen.sh, benches/gpu_model_ab.sh)."""


def phase_line(summary: dict, indent: int) -> str | None:
    """Where the screen's time went (set-up, then the loop's phases), under
    a name column `indent` wide; None for a summary without phases."""
    p = summary.get("phases")
    if p is None:
        return None
    return (f"{'':{indent}s} set-up {summary['setup_seconds']:.1f} s; "
            f"{p['iterations_seconds']:.1f} s in {p['blocks']} blocks, "
            f"{p['refill_seconds']:.1f} s in {p['refills']} refills, "
            f"{p['check_seconds']:.1f} s in checks")
