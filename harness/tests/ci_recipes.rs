//! The CI recipes in ci/ (GitHub Actions, GitLab) are valid YAML, shard the plan the way
//! `run --shard` expects (every shard 1..=N of one N), and gate on `report merge`. Parsed with
//! PyYAML (python3-yaml, installed by ci/setup.sh): no YAML crate is vendored here.

mod common;

use std::process::Command;

fn yaml_as_json(path: &str) -> serde_json::Value {
    let p = common::repo(path);
    let o = Command::new("python3")
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))", p.to_str().unwrap()])
        .output()
        .expect("python3 (ci/setup.sh installs python3-yaml)");
    assert!(o.status.success(), "{path} is not valid YAML: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn github_actions_runs_every_shard_and_merges_them() {
    let y = yaml_as_json("ci/github-actions.yml");
    let shards: Vec<u64> = y["jobs"]["shard"]["strategy"]["matrix"]["shard"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let n = shards.len() as u64;
    assert_eq!(shards, (1..=n).collect::<Vec<_>>(), "every shard 1..=N once");
    let steps = y["jobs"]["shard"]["steps"].as_array().unwrap();
    let run: String = steps.iter().filter_map(|s| s["run"].as_str()).collect::<Vec<_>>().join("\n");
    assert!(run.contains(&format!("--shard ${{{{ matrix.shard }}}}/{n}")), "{run}");
    let file = run.split_whitespace().find(|w| w.starts_with("scenarios/")).expect("a scenario file");
    assert!(common::repo(file).is_file(), "{file} exists");
    assert_eq!(y["jobs"]["merge"]["needs"], "shard");
    let merge: String = y["jobs"]["merge"]["steps"].as_array().unwrap().iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(merge.contains("report merge"), "{merge}");
}

#[test]
fn gitlab_runs_parallel_shards_and_merges_them() {
    let y = yaml_as_json("ci/gitlab-ci.yml");
    assert!(y["shard"]["parallel"].as_u64().unwrap() >= 2);
    let script = y["shard"]["script"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect::<Vec<_>>().join("\n");
    assert!(script.contains("--shard \"$CI_NODE_INDEX/$CI_NODE_TOTAL\""), "{script}");
    let merge = y["merge"]["script"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect::<Vec<_>>().join("\n");
    assert!(merge.contains("report merge"));
}
