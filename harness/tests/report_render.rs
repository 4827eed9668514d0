//! The HTML report in a real headless browser (Debian's chromium): it renders the matrix with
//! its verdict colours, and the page needs nothing from the network.

mod common;

use clonesafe::backend::accel::AccelChoice;
use clonesafe::backend::fake::FakeBackend;
use clonesafe::backend::lifecycle::Timeouts;
use clonesafe::events::NullSink;
use clonesafe::runner::{run_plan, RunOptions};
use clonesafe::scenario::{parse, Plan};
use clonesafe_metadata::Report;
use common::{fake_guests, Fake};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

async fn fake_report(dir: &Path) -> Report {
    let src = "[[scenario]]\nname = \"naive\"\nstrategy = \"naive\"\nclones = 3\n[scenario.expect]\nmac = \"unique\"\n\n[[scenario]]\nname = \"boots\"\nstrategy = \"cold-boot\"\nclones = 2\n";
    let plan = Plan { scenarios: parse(Path::new("t.toml"), src).unwrap() };
    let opts = RunOptions {
        probe: "/nonexistent/probe".into(),
        accel: AccelChoice::Tcg,
        jobs: 2,
        parallel: 1,
        guests_dir: fake_guests(dir),
        work_root: dir.join("runs"),
        timeouts: Timeouts::default(),
        shard: None, captures: None, image_policy: Default::default(), share: true,
    };
    run_plan(&plan, &opts, &Fake(Arc::new(FakeBackend::default())), &NullSink).await.unwrap()
}

#[tokio::test]
async fn report_files_are_self_contained_and_consistent() {
    let d = tempfile::tempdir().unwrap();
    let r = fake_report(d.path()).await;
    let out = d.path().join("out");
    clonesafe::report::write_reference(&r, &out).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("id=\"matrix\"") && html.contains("<details>"));
    // (SVG's xmlns="http://www.w3.org/2000/svg" is a name, not a fetch.)
    for banned in ["src=\"http", "href=\"http", "url(http", "@import", "<script", "<link"] {
        assert!(!html.contains(banned), "report.html must be self-contained: found {banned}");
    }
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    // 2 scenarios x every check (one test case each, skipped ones included); the unmet
    // `mac = unique` is the one failure.
    assert_eq!(junit.matches("<testcase ").count(), 2 * clonesafe_metadata::CheckId::ALL.len());
    assert_eq!(junit.matches("<failure ").count(), 1);
    assert!(junit.contains("classname=\"naive\" name=\"mac\"><failure"));
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("| naive | naive | qemu |"));
}

/// Screenshot in headless Chromium, then count the verdict colours' pixels.
#[tokio::test]
async fn report_renders_in_headless_chromium() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists()) else {
        assert!(std::env::var("CLONESAFE_REQUIRE_VMS").map_or(true, |v| v != "1"), "chromium is required in CI (ci/setup.sh installs it)");
        eprintln!("skipping: no chromium");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let r = fake_report(d.path()).await;
    let out = d.path().join("out");
    clonesafe::report::write_all(&r, &out).unwrap();
    let shot = d.path().join("shot.png");
    let profile = d.path().join("profile");
    let status = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", out.join("report.html").display()))
        .output()
        .unwrap();
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&status.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bpp = info.color_type.samples();
    let count = |rgb: [u8; 3]| buf[..info.buffer_size()].chunks(bpp).filter(|p| p[0] == rgb[0] && p[1] == rgb[1] && p[2] == rgb[2]).count();
    let green = count([0xc8, 0xef, 0xc8]);
    let red = count([0xf6, 0xc1, 0xc1]);
    assert!(green > 2000 && red > 2000, "matrix cells not rendered: {green} green, {red} red pixels");
}

/// Issue 11, item 7: on a full disk, no 0-byte or half-written temp file is left in `--out`.
#[tokio::test]
async fn a_full_out_directory_leaves_no_temp_file() {
    let d = tempfile::tempdir().unwrap();
    let r = fake_report(d.path()).await;
    let out = d.path().join("full");
    std::fs::create_dir(&out).unwrap();
    // 12 KiB of tmpfs holds report.json but not everything (root only: CI runs as root).
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=12k", "tmpfs", out.to_str().unwrap()]).status().is_ok_and(|s| s.success());
    if !mounted {
        assert!(std::env::var("CLONESAFE_REQUIRE_VMS").map_or(true, |v| v != "1"), "cannot mount a tmpfs");
        return;
    }
    let result = clonesafe::report::write_reference(&r, &out);
    let names: Vec<String> = std::fs::read_dir(&out).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let _ = Command::new("umount").arg(&out).status();
    let e = result.expect_err("12 KiB cannot hold the reference files");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "temp files left: {names:?}");
}

/// The HTML of the largest committed reference run (reports/debian: 23 scenarios) fits a page
/// 1280 px wide: the matrix has identities down the side and scenarios across under vertical
/// names. Chromium lays out a copy with a line of script that puts the page's scroll width in
/// its title (the report itself has no script).
#[test]
fn the_reference_report_fits_1280_px_without_horizontal_scroll() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists()) else {
        assert!(std::env::var("CLONESAFE_REQUIRE_VMS").map_or(true, |v| v != "1"), "chromium is required in CI (ci/setup.sh installs it)");
        eprintln!("skipping: no chromium");
        return;
    };
    let r: Report = serde_json::from_str(&std::fs::read_to_string(common::repo("reports/debian/report.json")).unwrap()).unwrap();
    assert!(r.scenarios.len() >= 20);
    let d = tempfile::tempdir().unwrap();
    let html = clonesafe::report::html::render(&r).replace("</body>", "<script>document.title='W'+document.documentElement.scrollWidth+'x'+window.innerWidth</script></body>");
    let page = d.path().join("page.html");
    // Lay `html` out in a 1280 px window; the page's title after its scripts ran, and stderr.
    let title_of = |html: String| {
        std::fs::write(&page, html).unwrap();
        let out = Command::new(chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,900", "--dump-dom"])
            .arg(format!("--user-data-dir={}", d.path().join("profile").display()))
            .arg(format!("file://{}", page.display()))
            .output()
            .unwrap();
        let dom = String::from_utf8_lossy(&out.stdout);
        (dom.split("<title>").nth(1).and_then(|t| t.split("</title>").next()).unwrap_or_default().to_string(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (title, stderr) = title_of(html);
    let (scroll, inner) = title.trim_start_matches('W').split_once('x').map(|(a, b)| (a.parse::<u32>().unwrap_or(0), b.parse::<u32>().unwrap_or(0))).unwrap_or((0, 0));
    assert!(scroll > 0 && inner > 0, "no layout measured (title {title:?}): {stderr}");
    assert!(scroll <= inner, "the page is {scroll} px wide in a {inner} px window");

    // The filter (radio buttons and CSS, no script in the report): with one (guest, backend)
    // chosen, only its scenarios' columns stay visible.
    let want = r.scenarios.iter().filter(|s| s.guest == r.scenarios[0].guest && s.backend == r.scenarios[0].backend).count();
    let html = clonesafe::report::html::render(&r)
        .replace("id=\"fall\" checked>", "id=\"fall\">")
        .replace("id=\"f0\">", "id=\"f0\" checked>")
        .replace("</body>", "<script>document.title='V'+[...document.querySelectorAll('#matrix th.s')].filter(e=>e.offsetParent!==null).length</script></body>");
    let visible = title_of(html).0.strip_prefix('V').and_then(|n| n.parse::<usize>().ok());
    assert!(want > 0 && want < r.scenarios.len());
    assert_eq!(visible, Some(want), "columns left visible by the filter");
}
