//! Creation failures name the service and replica and leave nothing behind.

use crate::harness::{cgroup_leftovers, sh, Host};

async fn assert_fails_cleanly(host: &Host, name: &str, extra: &str, message: &str) {
    let service = host.service(name, extra);
    let err = host
        .create(&service, 2)
        .await
        .expect_err("creation must fail");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("service {name}, replica 2: ")),
        "{text}"
    );
    assert!(text.contains(message), "{text}");
    assert!(
        host.leftovers().is_empty(),
        "{name}: {:?}",
        host.leftovers()
    );
    assert!(cgroup_leftovers(&format!("{name}-2-")).is_empty(), "{name}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_are_clear_and_leave_nothing_behind() {
    let host = Host::new().await;
    assert_fails_cleanly(
        &host,
        "no-exe",
        "command: [/bin/not-there]\n",
        "executable \"/bin/not-there\" not found in the image",
    )
    .await;
    assert_fails_cleanly(
        &host,
        "no-user",
        &(sh("true") + "user: ghost\n"),
        "user \"ghost\" is not in the image's /etc/passwd",
    )
    .await;
    assert_fails_cleanly(
        &host,
        "no-bind",
        &(sh("true") + "volumes: [{type: bind, source: /nonexistent/wharf, target: /x}]\n"),
        "bind source /nonexistent/wharf does not exist",
    )
    .await;
}
