//! Volumes: named, anonymous, bind and tmpfs.

use wharf::runtime::Runtime;

use crate::harness::{sh, Host};

#[tokio::test(flavor = "multi_thread")]
async fn named_volume_data_survives_remove_and_recreate() {
    let host = Host::new().await;
    let writer = host.service(
        "keeper",
        &(sh("echo kept > /data/note") + "volumes: [{type: volume, name: keep, target: /data}]\n"),
    );
    assert_eq!(host.run_to_exit(&writer).await.0, Some(0));
    let reader = host.service(
        "keeper",
        &(sh("cat /data/note") + "volumes: [{type: volume, name: keep, target: /data}]\n"),
    );
    assert_eq!(host.run_to_exit(&reader).await, (Some(0), "kept\n".into()));
    assert!(host.runtime.volume_dir("keep").join("note").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_volumes_go_with_their_container() {
    let host = Host::new().await;
    let service = host.service(
        "scratch",
        &(sh("echo x > /scratch/f; sleep 30") + "volumes: [{type: volume, target: /scratch}]\n"),
    );
    let id = host.run(&service).await;
    let dir = host.runtime.container_dir(&id).join("volumes/0");
    for _ in 0..100 {
        if dir.join("f").exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(dir.join("f").is_file());
    host.runtime.remove(&id).await.expect("remove");
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn bind_mounts_can_be_read_only_and_tmpfs_is_sized() {
    let host = Host::new().await;
    let shared = tempfile::tempdir().expect("bind source");
    std::fs::write(shared.path().join("index.html"), "static\n").expect("write");
    let extra = format!(
        "volumes:\n  - {{type: bind, source: {}, target: /static, readonly: true}}\n  - {{type: tmpfs, target: /fast, size: 2Mi}}\n",
        shared.path().display()
    );
    let service = host.service(
        "mounts",
        &(sh("cat /static/index.html; touch /static/new 2>&1 | grep -c Read-only; grep ' /fast ' /proc/mounts | grep -o 'size=[0-9a-z]*'")
            + &extra),
    );
    let (code, output) = host.run_to_exit(&service).await;
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(output, "static\n1\nsize=2048k\n");
    assert!(!shared.path().join("new").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_bind_mount_is_read_only_all_the_way_down() {
    let host = Host::new().await;
    let shared = tempfile::tempdir().expect("bind source");
    let below = shared.path().join("cache");
    std::fs::create_dir(&below).expect("mkdir");
    // Something mounted under the source on the host: a tmpfs here, a disk in real life.
    rustix::mount::mount(
        "tmpfs",
        &below,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"size=1m",
    )
    .expect("mount a tmpfs under the bind source");
    let service = host.service(
        "rro",
        &(sh("touch /static/cache/planted 2>&1 | grep -c Read-only")
            + &format!(
                "volumes:\n  - {{type: bind, source: {}, target: /static, readonly: true}}\n",
                shared.path().display()
            )),
    );
    let (code, output) = host.run_to_exit(&service).await;
    let planted = below.join("planted").exists();
    rustix::mount::unmount(&below, rustix::mount::UnmountFlags::DETACH).expect("unmount");
    assert_eq!((code, output.as_str()), (Some(0), "1\n"));
    assert!(!planted, "the container wrote below a read-only bind mount");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_root_process_reaches_its_volumes_and_the_image_whatever_wharfs_umask() {
    let host = Host::new().await;
    // The volume's mount point and its parents are made by the runtime (wharf runs
    // with umask 077); the process gets the usual 022.
    let service = host.service(
        "nobody",
        &(sh("umask; ls /srv/deep/data && echo volume reachable; \
              test -r /etc/passwd && echo image readable")
            + "user: \"65534:65534\"\n\
               volumes:\n  - {type: volume, name: deep, target: /srv/deep/data}\n"),
    );
    let (code, output) = host.run_to_exit(&service).await;
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(output, "0022\nvolume reachable\nimage readable\n");
}
