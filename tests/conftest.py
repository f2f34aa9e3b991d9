"""Shared pytest setup: report how many host tests (those needing a real
ComfyUI through COMFYUI_PATH) ran or were skipped."""

import os


def _is_host(report):
    return "/host/" in report.nodeid.replace("\\", "/") or report.nodeid.startswith("tests/host")


def pytest_terminal_summary(terminalreporter):
    stats = terminalreporter.stats
    ran = sum(1 for r in stats.get("passed", []) + stats.get("failed", []) if _is_host(r) and r.when == "call")
    skipped = sum(1 for r in stats.get("skipped", []) if _is_host(r))
    where = os.environ.get("COMFYUI_PATH") or "COMFYUI_PATH not set"
    terminalreporter.write_line(f"host tests (real ComfyUI: {where}): {ran} ran, {skipped} skipped")
