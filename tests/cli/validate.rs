//! `wharf validate`: what users see for valid and broken manifests.

use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;

use nix::sys::stat::Mode;

use crate::common::{assert_succeeds_with, manifest, wharf, wharf_in, wharf_in_within, write};

#[test]
fn every_example_is_valid() {
    let run = wharf(&["validate", "examples/"]);
    assert_succeeds_with(&run, "3 services in 3 files OK\n");
}

/// Each file in tests/manifests/invalid/ starts with `# expect: LINE:COL FIELD: TEXT`;
/// validating it must fail with exit 1 and print `FILE:LINE:COL: FIELD: TEXT...`.
#[test]
fn each_broken_manifest_names_file_line_column_and_field() {
    let dir = "tests/manifests/invalid";
    let mut files: Vec<_> = fs::read_dir(dir)
        .expect("corpus exists")
        .map(|entry| entry.expect("readable entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 25, "only {} invalid manifests", files.len());
    for file in files {
        let text = fs::read_to_string(&file).expect("readable corpus file");
        let expect = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks an `# expect:` first line", file.display()));
        let (location, rest) = expect.split_once(' ').expect("LINE:COL then the message");
        let (field, message) = rest.split_once(": ").expect("FIELD: message");
        let field_part = if field.is_empty() {
            String::new()
        } else {
            format!(" {field}:")
        };
        let wanted = format!("{}:{location}:{field_part} {message}", file.display());

        let run = wharf(&["validate", &file.display().to_string()]);
        assert_eq!(run.code, 1, "{} should be invalid", file.display());
        assert!(
            run.stderr.lines().any(|line| line.starts_with(&wanted)),
            "expected a line starting with\n  {wanted}\ngot\n{}",
            run.stderr
        );
    }
}

#[test]
fn all_errors_of_all_files_are_reported_in_one_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "a.yaml",
        manifest("a") + "replicas: -1\nrestart: sometimes\n",
    );
    write(dir.path(), "b.yaml", manifest("b") + "workdir: app\n");
    write(dir.path(), "c.yaml", manifest("c"));

    let run = wharf_in(dir.path(), &["validate", "."]);
    assert_eq!(run.code, 1);
    let errors: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        errors,
        [
            "./a.yaml:5:11: replicas: expected a whole number, 0 or more, found -1",
            "./a.yaml:6:10: restart: \"sometimes\" is not one of: always, on-failure, never",
            "./b.yaml:5:10: workdir: \"app\" must be an absolute path (starting with /)",
            "3 errors in 2 files (3 files read)",
        ]
    );
}

#[test]
fn a_name_defined_in_two_files_is_an_error_naming_both() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "api.yaml", manifest("web"));
    write(dir.path(), "web.yaml", manifest("web"));

    let run = wharf_in(dir.path(), &["validate", "."]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("./web.yaml:3:7: name: service \"web\" is already defined at ./api.yaml:3:7"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_host_port_published_by_two_services_is_an_error_naming_both() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = "ports: [{container: 8080, host: 18080}]\n";
    write(dir.path(), "api.yaml", manifest("api") + port);
    write(dir.path(), "web.yaml", manifest("web") + port);

    // Each file alone is valid: the clash is between the manifests one run loads.
    assert_succeeds_with(
        &wharf_in(dir.path(), &["validate", "web.yaml"]),
        "1 service in 1 file OK\n",
    );
    let run = wharf_in(dir.path(), &["validate", "."]);
    assert_eq!(run.code, 1);
    let errors: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        errors,
        [
            "./web.yaml:5:33: ports[0].host: service \"web\" publishes 18080/tcp on all \
             addresses, but service \"api\" already publishes 18080/tcp on all addresses at \
             ./api.yaml:5:33 (ports[0]); a host port goes to one service: change `host` in one \
             of them, or publish them on different `host_ip` addresses (without host_ip, a port \
             takes every address)",
            "1 error in 1 file (2 files read)",
        ]
    );
}

#[test]
fn one_host_port_may_be_published_on_different_addresses_or_protocols() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "api.yaml",
        manifest("api") + "ports: [{container: 8080, host: 18080, host_ip: 127.0.0.1}]\n",
    );
    write(
        dir.path(),
        "web.yaml",
        manifest("web") + "ports: [{container: 8080, host: 18080, host_ip: 10.0.0.1}]\n",
    );
    write(
        dir.path(),
        "dns.yaml",
        manifest("dns") + "ports: [{container: 53, host: 18080, protocol: udp}]\n",
    );

    let run = wharf_in(dir.path(), &["validate", "."]);
    assert_succeeds_with(&run, "3 services in 3 files OK\n");
}

#[test]
fn a_file_may_hold_several_services() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "{}---\n{}---\n# nothing here\n",
        manifest("a"),
        manifest("b")
    );
    write(dir.path(), "stack.yml", text);

    let run = wharf_in(dir.path(), &["validate", "stack.yml"]);
    assert_succeeds_with(&run, "2 services in 1 file OK\n");
}

#[test]
fn directories_read_only_visible_top_level_yaml_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path();
    write(path, "web.yaml", manifest("web"));
    write(path, "worker.yml", manifest("worker"));
    // Empty and comment-only files define nothing, without error.
    write(path, "empty.yaml", "");
    write(path, "comments.yaml", "# nothing yet\n");
    // Leftovers that would be errors (duplicates, broken YAML) if they were read.
    for leftover in [
        ".hidden.yaml",
        "web.yaml~",
        ".web.yaml.swp",
        ".web.yaml.swx",
        "web.yaml.bak",
        "web.yaml.tmp",
        "web.yaml.orig",
        "#web.yaml#",
        "notes.txt",
    ] {
        write(path, leftover, "{ broken");
    }
    fs::create_dir(path.join("old")).expect("mkdir");
    write(path, "old/web.yaml", manifest("web"));
    fs::create_dir(path.join(".git")).expect("mkdir");
    write(path, ".git/web.yaml", "{ broken");

    let run = wharf_in(path, &["validate", "."]);
    assert_succeeds_with(&run, "2 services in 4 files OK\n");
}

#[test]
fn symlinks_are_followed_as_in_a_kubernetes_configmap_mount() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path();
    // A ConfigMap volume: files are symlinks into ..data, itself a symlink to a
    // timestamped directory that is swapped atomically on update.
    fs::create_dir(path.join("..2026_11_29_10_00_00.1")).expect("mkdir");
    write(path, "..2026_11_29_10_00_00.1/web.yaml", manifest("web"));
    symlink("..2026_11_29_10_00_00.1", path.join("..data")).expect("symlink");
    symlink("..data/web.yaml", path.join("web.yaml")).expect("symlink");

    let run = wharf_in(path, &["validate", "."]);
    assert_succeeds_with(&run, "1 service in 1 file OK\n");
}

#[test]
fn bytes_that_are_not_utf8_are_located() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bytes = manifest("web").into_bytes();
    bytes.extend_from_slice(b"labels: {team: caf\xe9}\n");
    write(dir.path(), "web.yaml", bytes);

    let run = wharf_in(dir.path(), &["validate", "web.yaml"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .starts_with("web.yaml:5:19: file is not valid UTF-8; save it as UTF-8"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_path_is_an_error_and_no_path_is_a_usage_error() {
    let run = wharf(&["validate", "no/such/dir"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .starts_with("no/such/dir: cannot read: No such file or directory"),
        "{}",
        run.stderr
    );

    let run = wharf(&["validate"]);
    assert_eq!(run.code, 2, "usage errors exit 2: {}", run.stderr);
}

#[test]
fn json_output_lists_services_and_errors() {
    let run = wharf(&["validate", "--json", "examples/"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(report["valid"], true);
    assert_eq!(report["files"], 3);
    let names: Vec<&str> = report["services"]
        .as_array()
        .expect("services array")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["notes", "web", "worker"]);

    let run = wharf(&[
        "validate",
        "--json",
        "tests/manifests/invalid/zero-cpus.yaml",
    ]);
    assert_eq!(run.code, 1);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(report["valid"], false);
    let error = &report["errors"][0];
    assert_eq!(error["line"], 6);
    assert_eq!(error["column"], 19);
    assert_eq!(error["field"], "resources.cpus");
}

#[test]
fn verbose_lists_each_service_with_its_spec_hash() {
    let run = wharf(&["validate", "-v", "examples/worker.yaml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let first = run.stdout.lines().next().expect("a line per service");
    assert!(
        first.starts_with("worker  examples/worker.yaml:7:7  replicas 3  spec "),
        "{first}"
    );
}

#[test]
fn aliases_may_add_at_most_16_mib_and_the_alias_going_over_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A half-MiB argument and 40 aliases of it: 20 MiB once expanded, from a file
    // of half a MiB.
    let half_mib = "x".repeat(512 << 10);
    let text = manifest("web") + &format!("args:\n- &big '{half_mib}'\n") + &"- *big\n".repeat(40);
    write(dir.path(), "web.yaml", text);

    let run = wharf_in(dir.path(), &["validate", "web.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    // The anchored value and 31 aliases make 16 MiB; the 32nd alias (line 38) is refused.
    assert!(
        run.stderr.starts_with(
            "web.yaml:38:3: aliases in this file expand to more than 16 MiB of text (each alias \
             repeats its anchor's whole value; the limit guards against alias bombs): use \
             fewer aliases or anchor smaller values\n"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn files_over_1_mib_are_refused_with_their_size_and_the_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A valid manifest and a long comment, to exactly `len` bytes.
    let padded = |len: usize| {
        let mut text = manifest("web") + "#";
        text.push_str(&" ".repeat(len - text.len() - 1));
        text + "\n"
    };
    write(dir.path(), "web.yaml", padded(1 << 20));
    let run = wharf_in(dir.path(), &["validate", "web.yaml"]);
    assert_succeeds_with(&run, "1 service in 1 file OK\n");

    write(dir.path(), "web.yaml", padded((1 << 20) + 1));
    let run = wharf_in(dir.path(), &["validate", "web.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(
            "web.yaml: the file is 1048577 bytes, more than the 1 MiB limit for a manifest \
             file; split its services into several files\n"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn a_fifo_is_reported_not_waited_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    nix::unistd::mkfifo(&dir.path().join("web.yaml"), Mode::S_IRUSR | Mode::S_IWUSR)
        .expect("mkfifo");
    write(dir.path(), "api.yaml", manifest("api"));
    let limit = Duration::from_secs(60);
    let not_regular =
        "not a regular file (a FIFO); a manifest must be a regular file or a symlink to one";

    // Named on the command line: nothing ever writes to it, so opening it to read
    // would wait forever.
    let run = wharf_in_within(dir.path(), &["validate", "web.yaml"], limit);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with(&format!("web.yaml: {not_regular}\n")),
        "{}",
        run.stderr
    );

    // In a directory: reported too rather than silently left out.
    let run = wharf_in_within(dir.path(), &["validate", "."], limit);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let errors: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        errors,
        [
            format!("./web.yaml: {not_regular}").as_str(),
            "1 error in 1 file (2 files read)",
        ]
    );
}
