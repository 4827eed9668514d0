//! The self-contained HTML report: the matrix (identities down the side, grouped by severity;
//! scenarios across) as a colour-coded table whose cells open to their evidence, timing, notes,
//! and inline SVG plots.
//! No scripts, fonts or anything else from the network.

use super::{explain, plots};
use crate::text::xml_escape as esc;
use clonesafe_metadata::{CheckId, CheckName, MeasurementId, Report, ScenarioReport, Severity, Strategy, Verdict};
use std::fmt::Write;

/// The matrix: identities down the side, grouped by what breaks when clones share them (worst
/// first; declared identities last), scenarios across under vertical names, so a report of 20+
/// scenarios fits a 1280 px page. Each cell opens to its evidence.
fn matrix_html(r: &Report) -> String {
    let mut h = String::from("<h2>Matrix</h2>");
    // A report of several guests or backends gets a filter: one radio button per (guest,
    // backend), and CSS (:has) that hides the other columns. No script.
    let key = |s: &ScenarioReport| format!("{} on {}", s.guest, s.backend);
    let mut keys: Vec<String> = Vec::new();
    for s in &r.scenarios {
        if !keys.contains(&key(s)) {
            keys.push(key(s));
        }
    }
    let k = |s: &ScenarioReport| keys.iter().position(|x| *x == key(s)).unwrap_or(0);
    if keys.len() > 1 {
        h.push_str("<style>");
        for i in 0..keys.len() {
            let _ = write!(h, "body:has(#f{i}:checked) #matrix :is(th,td).k:not(.k{i}){{display:none}}");
        }
        h.push_str("</style><p class=\"filter\">Show: <label><input type=\"radio\" name=\"f\" id=\"fall\" checked> all</label>");
        for (i, name) in keys.iter().enumerate() {
            let _ = write!(h, " <label><input type=\"radio\" name=\"f\" id=\"f{i}\"> {}</label>", esc(name));
        }
        h.push_str("</p>");
    }
    h.push_str("<table id=\"matrix\"><thead><tr><th class=\"id\">identity</th>");
    for s in &r.scenarios {
        let title = format!("{}: {} on {} ({})", s.name, s.recipe_label(), s.backend, s.guest);
        let _ = write!(h, "<th class=\"s k k{}\" title=\"{}\"><span>{}</span></th>", k(s), esc(&title), esc(&s.name));
    }
    h.push_str("</tr></thead>");
    let cols = columns(r);
    // A declared identity joins the group of the severity its declaration states; one that
    // states none is grouped apart.
    let severity = |c: &CheckName| match c.builtin() {
        Some(b) => Some(crate::checks::catalogue::consequence(b).0),
        None => stated(r, c).and_then(|s| s.severity),
    };
    let mut groups: Vec<(String, Vec<&CheckName>)> = Severity::ALL
        .iter()
        .map(|sev| (format!("{sev}: {}", severity_words(*sev)), cols.iter().filter(|c| severity(c) == Some(*sev)).collect()))
        .collect();
    groups.push(("declared by the scenario file, severity not stated".into(), cols.iter().filter(|c| severity(c).is_none()).collect()));
    for (title, ids) in groups.iter().filter(|(_, ids)| !ids.is_empty()) {
        let _ = write!(h, "<tr class=\"group\"><th colspan=\"{}\">{}</th></tr>", r.scenarios.len() + 1, esc(title));
        for id in ids {
            let why = match id.builtin() {
                Some(b) => crate::checks::catalogue::consequence(b).1.to_string(),
                None => match stated(r, id).and_then(|s| s.consequence.as_deref()) {
                    Some(c) => format!("declared: {c}"),
                    None => "declared by the scenario file, which states no consequence".into(),
                },
            };
            let mark = if id.is_declared() { " <small>(declared)</small>" } else { "" };
            let _ = write!(h, "<tr><th class=\"id\" title=\"{}\">{}{mark}</th>", esc(&why), esc(id.as_str()));
            for s in &r.scenarios {
                if let Some(e) = &s.error {
                    let _ = write!(h, "<td class=\"error k k{}\"><details>", k(s));
                    let _ = write!(h, "<summary>err</summary><pre>could not run: {}</pre></details></td>", esc(e));
                    continue;
                }
                match s.checks.iter().find(|c| c.id() == *id) {
                    None => {
                        let _ = write!(h, "<td class=\"k k{}\"></td>", k(s));
                    }
                    Some(c) => {
                        let unmet = if c.met { "" } else { " unmet" };
                        let exp = c.expected.map(|e| format!("expected: {e}\n")).unwrap_or_default();
                        let values = serde_json::to_string_pretty(&c.result.values).unwrap_or_default();
                        let evidence = c.result.evidence.as_ref().map(|e| format!("\nevidence: {}", serde_json::to_string_pretty(e).unwrap_or_default())).unwrap_or_default();
                        let _ = write!(
                            h,
                            "<td id=\"c-{}-{}\" class=\"{}{unmet} k k{}\"><details><summary>{}</summary><pre>{}: {} on {}\n{}{}\nvalues: {}{}</pre></details></td>",
                            esc(&s.name),
                            esc(id.as_str()),
                            class(c.verdict()),
                            k(s),
                            short(c.verdict()),
                            esc(&s.name),
                            esc(id.as_str()),
                            s.backend,
                            esc(&exp),
                            esc(&c.result.detail),
                            esc(&values),
                            esc(&evidence)
                        );
                    }
                }
            }
            h.push_str("</tr>");
        }
    }
    h.push_str("</table>");
    h
}

/// `clonesafe assess`'s answer, above the matrix: conclusions with links to the cells they rest
/// on, what the image ships, and per recipe what cloning leaves shared.
fn assessment_html(a: &clonesafe_metadata::Assessment) -> String {
    let link = |cell: &str| {
        let anchor = cell.replacen('/', "-", 1);
        format!("<a href=\"#c-{}\">{}</a>", esc(&anchor), esc(cell))
    };
    let mut h = format!("<h2>Assessment: {}</h2><ul>", esc(&a.subject));
    for c in &a.conclusions {
        let cells = if c.cells.is_empty() { String::new() } else { format!(" <span class=\"note\">({})</span>", c.cells.iter().map(|x| link(x)).collect::<Vec<_>>().join(", ")) };
        let _ = write!(h, "<li>{}{cells}</li>", esc(&c.text));
    }
    h.push_str("</ul><h3>Shipped in the image</h3><ul>");
    if a.shipped.is_empty() {
        h.push_str("<li>Nothing (or the baseline did not run).</li>");
    }
    for s in &a.shipped {
        let _ = write!(h, "<li><b>{}</b> ({}): {} Fix: {} ({})</li>", esc(s.id.as_str()), s.severity.map(|x| x.as_str()).unwrap_or("severity not stated"), esc(&s.consequence), esc(s.fix.as_deref().unwrap_or("not known to clonesafe")), link(&s.cell));
    }
    h.push_str("</ul><h3>Per recipe: what cloning leaves shared, worst first</h3><table><tr><th>recipe</th><th>shared by cloning</th><th>restore ms</th><th>fix-up ms</th></tr>");
    for r in &a.recipes {
        let shared = match &r.error {
            Some(e) => format!("could not run: {}", esc(e.lines().next().unwrap_or_default())),
            None => r.shared.iter().filter(|s| !s.shipped).map(|s| format!("{} <small>{}</small>", link(&s.cell), s.severity.map(|x| x.as_str()).unwrap_or("?"))).collect::<Vec<_>>().join(", "),
        };
        let _ = write!(h, "<tr><td>{} ({})</td><td>{shared}</td><td>{}</td><td>{}</td></tr>", esc(&r.scenario), esc(&r.recipe), r.restore_ms.map(|v| v.to_string()).unwrap_or_default(), r.fixup_ms.map(|f| format!("{f:.0}")).unwrap_or_default());
    }
    h.push_str("</table>");
    h
}

fn severity_words(s: Severity) -> &'static str {
    match s {
        Severity::KeyReuse => "keys, secrets or random output reused or exposed",
        Severity::NetworkCollision => "clones collide on the network",
        Severity::IdentityConfusion => "logs, inventory or clustering take clones for one machine",
        Severity::Informational => "worth knowing",
    }
}

fn short(v: Verdict) -> &'static str {
    match v {
        Verdict::Unique => "uniq",
        Verdict::Duplicate => "DUP",
        Verdict::Error => "err",
        Verdict::Skipped => "skip",
    }
}

fn class(v: Verdict) -> &'static str {
    match v {
        Verdict::Unique => "unique",
        Verdict::Duplicate => "duplicate",
        Verdict::Error => "error",
        Verdict::Skipped => "skipped",
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #bbb;padding:4px 6px;vertical-align:top}th{background:#eee}
td.unique{background:#c8efc8}td.duplicate{background:#f6c1c1}td.skipped{background:#e6e6e6}td.error{background:#ffd591}
td.unmet{outline:3px solid #b00;outline-offset:-3px}details summary{cursor:pointer;font-weight:bold}
pre{white-space:pre-wrap;overflow-wrap:anywhere;max-width:42em;font-size:11px;margin:4px 0}
#matrix th.s{vertical-align:bottom;position:sticky;top:0;z-index:1}#matrix th.s span{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap}
#matrix th.id{text-align:left;position:sticky;left:0;background:#eee;font-weight:normal;white-space:nowrap}#matrix tr.group th{text-align:left;background:#ddd}
#matrix td{text-align:center;padding:3px 4px}.legend span{padding:2px 8px;margin-right:6px}
.note{font-size:12px;color:#444}tr.collides td{background:#f6c1c1}";

pub fn render(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(h, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>clonesafe report</title><style>{STYLE}</style></head><body>");
    let _ = write!(h, "<h1>clonesafe: is cloning a running VM safe?</h1>");
    let _ = write!(
        h,
        "<p>clonesafe {} &middot; accelerator <b>{}</b> ({}) &middot; {} &middot; host kernel {} &middot; guest kernel {} &middot; {} CPUs</p>",
        esc(&r.clonesafe_version),
        r.host.accel,
        esc(&r.host.accel_reason),
        esc(&r.host.qemu),
        esc(&r.host.kernel),
        esc(r.host.guest_kernel.as_deref().unwrap_or("?")),
        r.host.cpus
    );
    let _ = write!(h, "<p class=\"legend\"><span class=\"l\" style=\"background:#c8efc8\">uniq: every VM its own</span><span style=\"background:#f6c1c1\">DUP: shared</span><span style=\"background:#e6e6e6\">skip: not applicable</span><span style=\"background:#ffd591\">err: could not tell</span><span style=\"outline:3px solid #b00\">expectation not met</span> Click a cell for its evidence.</p>");
    if let Some(a) = &r.assessment {
        h.push_str(&assessment_html(a));
    }
    h.push_str(&matrix_html(r));
    h.push_str(&addresses_html(r));

    h.push_str("<h2>What no recipe here fixes</h2>");
    h.push_str(&still_duplicated_html(r));

    let ids = measured_ids(r);
    h.push_str("<h2>Timing</h2><table><tr><th>scenario</th><th>boot_ms</th><th>snapshot_ms</th><th>restore_ms</th>");
    for id in &ids {
        let _ = write!(h, "<th>{} ms</th>", id.label());
    }
    h.push_str("</tr>");
    for s in r.scenarios.iter().filter(|s| s.error.is_none()) {
        let t = &s.timing;
        let list = |v: Vec<String>| v.join(", ");
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            esc(&s.name),
            list(t.boot_ms.iter().map(|x| x.to_string()).collect()),
            t.snapshot_ms.map(|x| x.to_string()).unwrap_or_default(),
            list(t.restore_ms.iter().map(|x| x.to_string()).collect()),
        );
        for id in &ids {
            let v = t.measurements.get(id).map(|v| list(v.iter().map(|x| x.map(|v| format!("{v:.0}")).unwrap_or("never".into())).collect())).unwrap_or_default();
            let _ = write!(h, "<td>{v}</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</table><h2>Plots</h2>");
    for p in [plots::boot_vs_restore(&r.scenarios), plots::windows(&r.scenarios)] {
        match p {
            Ok(svg) => {
                h.push_str("<div class=\"plot\">");
                h.push_str(svg.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
                h.push_str("</div>");
            }
            Err(e) => {
                let _ = write!(h, "<p class=\"note\">plot not drawn: {}</p>", esc(&e));
            }
        }
    }
    h.push_str("<h2>Notes</h2>");
    for s in &r.scenarios {
        if s.notes.is_empty() {
            continue;
        }
        let _ = write!(h, "<h3>{}</h3><ul class=\"note\">", esc(&s.name));
        for n in &s.notes {
            let _ = write!(h, "<li>{}</li>", esc(n));
        }
        h.push_str("</ul>");
    }
    h.push_str("</body></html>\n");
    h
}

/// Per scenario on a network segment: who got which address, from the segment checks' values
/// and evidence, the rows that share an IPv4 address or a DHCP client id marked.
fn addresses_html(r: &Report) -> String {
    let mut h = String::new();
    for s in &r.scenarios {
        let check = |id: CheckId| s.checks.iter().find(|c| *c.id() == id && c.verdict() != Verdict::Skipped);
        let Some(lease) = check(CheckId::Ipv4Lease) else { continue };
        let Some(vms) = lease.result.evidence.as_ref().and_then(|e| e["vms"].as_array()) else { continue };
        if h.is_empty() {
            h.push_str("<h2>Who got which address</h2><p class=\"note\">Each segment scenario's VMs as the wire saw them at the end of the watch; rows that share an IPv4 address or a DHCP client id are marked.</p>");
        }
        let value = |id: CheckId, i: usize| -> String {
            check(id).and_then(|c| c.result.values.get(i)).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".into(),
                v => v.to_string(),
            }).unwrap_or_default()
        };
        let rows: Vec<(String, String, String, String, String, String, String)> = vms
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let compared = v["role"] != "source";
                let macs = v["macs"].as_array().map(|m| m.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" ")).unwrap_or_default();
                let v4 = v["wire"]["final"].as_str().unwrap_or("-").to_string();
                let get = |id| if compared { value(id, i) } else { String::new() };
                (v["vm"].as_str().unwrap_or("").to_string(), v["role"].as_str().unwrap_or("").to_string(), macs, get(CheckId::DhcpClientId), v4, get(CheckId::Ipv6Addr), get(CheckId::IpWindowMs))
            })
            .collect();
        let _ = write!(h, "<h3>{}</h3><table><tr><th>VM</th><th>role</th><th>MAC assigned</th><th>DHCP client id</th><th>IPv4 held</th><th>IPv6</th><th>own address after (ms)</th></tr>", esc(&s.name));
        for (i, row) in rows.iter().enumerate() {
            let shares = rows.iter().enumerate().any(|(j, o)| j != i && ((row.4 != "-" && o.4 == row.4) || (!row.3.is_empty() && o.3 == row.3)));
            let _ = write!(
                h,
                "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if shares { " class=\"collides\"" } else { "" },
                esc(&row.0), esc(&row.1), esc(&row.2), esc(&row.3), esc(&row.4), esc(&row.5), esc(&row.6)
            );
        }
        h.push_str("</table>");
    }
    h
}

/// Every measurement some scenario of the run has, in id order.
pub fn measured_ids(r: &Report) -> Vec<MeasurementId> {
    MeasurementId::ALL.iter().copied().filter(|id| r.scenarios.iter().any(|s| s.timing.measurements.contains_key(id))).collect()
}

/// For each scenario of strategy `full`: the identities still duplicated, and why.
pub fn still_duplicated(r: &Report) -> Vec<(&ScenarioReport, Vec<(&CheckName, &'static str)>)> {
    r.scenarios
        .iter()
        .filter(|s| s.strategy == Strategy::Full && s.error.is_none())
        .map(|s| (s, s.checks.iter().filter(|c| c.verdict() == Verdict::Duplicate).map(|c| (c.id(), explain::why_duplicate(c.id()))).collect()))
        .collect()
}

fn still_duplicated_html(r: &Report) -> String {
    let mut h = String::new();
    let list = still_duplicated(r);
    if list.is_empty() {
        return "<p>No <code>full</code> scenario in this run.</p>".into();
    }
    for (s, dups) in list {
        let _ = write!(h, "<h3>{} ({})</h3><ul>", esc(&s.name), s.backend);
        if dups.is_empty() {
            h.push_str("<li>Nothing: every identity was unique.</li>");
        }
        for (id, why) in dups {
            let _ = write!(h, "<li><b>{}</b>: {}</li>", esc(id.as_str()), esc(why));
        }
        h.push_str("</ul>");
    }
    h
}

/// What the declaration of `id` states, from the first check of the report that carries it.
fn stated<'a>(r: &'a Report, id: &CheckName) -> Option<&'a clonesafe_metadata::Stated> {
    r.scenarios.iter().flat_map(|s| &s.checks).find(|c| c.id() == id).and_then(|c| c.result.stated.as_ref())
}

/// The matrix's columns: every check that some scenario of the report has, in the order of
/// [`CheckId::ALL`], then the declared identities in the order they first appear. A report of
/// an older clonesafe (fewer checks) keeps its own columns.
pub(super) fn columns(r: &Report) -> Vec<CheckName> {
    let mut cols: Vec<CheckName> = CheckId::ALL.iter().copied().filter(|id| r.scenarios.iter().any(|s| s.check(*id).is_some())).map(CheckName::from).collect();
    for c in r.scenarios.iter().flat_map(|s| &s.checks) {
        if c.id().is_declared() && !cols.contains(c.id()) {
            cols.push(c.id().clone());
        }
    }
    cols
}

#[cfg(test)]
mod tests {
    use clonesafe_metadata::Report;

    /// A report of several guests or backends gets a filter that needs no script: a radio button
    /// per (guest, backend) and a CSS rule that hides the other columns.
    #[test]
    fn several_guests_or_backends_get_a_filter() {
        let r: Report = serde_json::from_str(include_str!("../../../reports/debian/report.json")).unwrap();
        let html = super::render(&r);
        assert!(html.contains("id=\"f0\"") && html.contains("id=\"f1\"") && html.contains("body:has(#f1:checked) #matrix :is(th,td).k:not(.k1){display:none}"));
        assert!(html.contains("> debian12 on qemu</label>") && html.contains("> debian12 on libvirt</label>") && html.contains("> debian13 on qemu</label>"), "one button per guest and backend");
        let one: Report = serde_json::from_str(include_str!("../../../reports/apps/report.json")).unwrap();
        assert!(!super::render(&one).contains("type=\"radio\""), "one guest on one backend: no filter");
    }

    /// Everything a guest controls (a hostname, a declared identity's output, a note) and a
    /// scenario name reach the HTML escaped and the markdown table without breaking a row.
    #[test]
    fn guest_strings_cannot_inject_markup() {
        let mut r: Report = serde_json::from_str(include_str!("../../../reports/apps/report.json")).unwrap();
        let evil = "<script>alert(1)</script>|\n| injected | row |";
        let s = &mut r.scenarios[0];
        s.notes.push(evil.into());
        s.description = Some(evil.into());
        for c in s.checks.iter_mut().filter(|c| c.result.id.as_str() == "hostname" || c.result.declared) {
            c.result.values = vec![serde_json::json!(evil); c.result.values.len()];
            c.result.detail = evil.into();
            c.result.evidence = Some(serde_json::json!({ "vms": [{ "reading": { "raw": { "stdout": evil } } }] }));
        }
        s.error = None;
        let html = super::render(&r);
        assert!(!html.contains("<script>alert"), "raw markup from the guest in the HTML");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        // A scenario that could not run shows its error; that is the guest's console too.
        r.scenarios[1].error = Some(evil.into());
        let md = super::super::markdown::render(&r);
        assert!(!md.lines().any(|l| l.starts_with("| injected")), "a guest string broke a markdown row:\n{md}");
        assert!(!super::render(&r).contains("<script>alert"));
    }
}
