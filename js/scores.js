// Lines a QualityGate or AdaptiveStudentTeacher shows on its node after
// execution, from the `ui` it returns (reflect_scores, reflect_threshold,
// reflect_passed; reflect_refined and a cost line from AdaptiveStudentTeacher).
// Pure, unit-tested.

export function scoreLines(ui, maxLines = 8) {
  const scores = ui?.reflect_scores ?? [];
  if (!scores.length) return [];
  const passed = ui.reflect_passed ?? [];
  const tau = (ui.reflect_threshold ?? [])[0];
  const refined = ui.reflect_refined;
  const [yes, no] = refined ? ["kept", "refined"] : ["pass", "fail"];
  const nPass = passed.filter(Boolean).length;
  const head = (refined ? `${scores.length - nPass}/${scores.length} refined` : `${nPass}/${scores.length} passed`)
    + (tau === undefined ? "" : ` (threshold ${tau.toFixed(3)})`);
  const rows = scores.map((s, i) => `#${i} ${s >= 0 ? "+" : ""}${s.toFixed(3)} ${passed[i] ? yes : no}`);
  if (refined && ui.text?.length) rows.push(...ui.text);
  if (rows.length > maxLines) {
    const rest = rows.length - (maxLines - 1);
    return [head, ...rows.slice(0, maxLines - 1), `... ${rest} more`];
  }
  return [head, ...rows];
}
