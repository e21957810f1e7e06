//! SimDisk against turmoil's durability model: what survives `Sim::crash`
//! and what does not.
//!
//! Each test runs storage operations on a turmoil host, crashes the host
//! (turmoil drops every pending filesystem operation), restarts it and runs
//! a second set of operations on the restarted host, which sees only what
//! was durable. The host's software decides what to run by counting its
//! boots, and hands its findings back through a shared cell.

use std::cell::{Cell, RefCell};
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use turmoil::Builder;
use weir::io::{
    read_exact_at, Disk, DiskRef, FaultConfig, FaultKind, FaultyDisk, InjectedFault, OpenMode,
};
use weir_sim::SimDisk;

const HOST: &str = "node";
const SEED: u64 = 0x5eed;

fn seeded() -> Builder {
    let mut builder = Builder::new();
    builder.rng_seed(SEED);
    builder
}

fn sim_disk() -> DiskRef {
    Arc::new(SimDisk::new())
}

/// Runs `before` on a fresh host, crashes it, restarts it, and returns what
/// `after` returns on the restarted host.
fn across_crash<T: 'static>(
    builder: &Builder,
    disk: DiskRef,
    before: impl Fn(&dyn Disk) -> io::Result<()> + 'static,
    after: impl Fn(&dyn Disk) -> io::Result<T> + 'static,
) -> T {
    let boots = Rc::new(Cell::new(0u32));
    let result = Rc::new(RefCell::new(None));
    let (before, after) = (Rc::new(before), Rc::new(after));
    let mut sim = builder.build();
    let reported = Rc::clone(&result);
    sim.host(HOST, move || {
        let boot = boots.replace(boots.get() + 1);
        let (disk, before, after) = (disk.clone(), before.clone(), after.clone());
        let reported = Rc::clone(&reported);
        async move {
            if boot == 0 {
                before(disk.as_ref())?;
            } else {
                *reported.borrow_mut() = Some(after(disk.as_ref())?);
            }
            Ok::<(), Box<dyn std::error::Error>>(())
        }
    });
    // The software has no awaits, so one step runs it to completion.
    sim.step().expect("first boot failed");
    sim.crash(HOST);
    sim.bounce(HOST);
    sim.step().expect("boot after the crash failed");
    let value = result.borrow_mut().take();
    value.expect("the restarted host did not report")
}

/// Runs `f` on a host, without crashing it, and returns its result.
fn on_host<T: 'static>(
    builder: &Builder,
    disk: DiskRef,
    f: impl FnOnce(&dyn Disk) -> io::Result<T> + 'static,
) -> io::Result<T> {
    let result = Rc::new(RefCell::new(None));
    let reported = Rc::clone(&result);
    let mut sim = builder.build();
    sim.client(HOST, async move {
        *reported.borrow_mut() = Some(f(disk.as_ref()));
        Ok(())
    });
    sim.run().expect("simulation failed");
    let value = result.borrow_mut().take();
    value.expect("the host did not report")
}

/// Creates `dir` under `/` and makes its entry durable.
fn durable_dir(disk: &dyn Disk, dir: &str) -> io::Result<()> {
    disk.create_dir_all(Path::new(dir))?;
    disk.sync_dir(Path::new("/"))
}

/// Creates `path` holding `data`, with data and entry durable.
fn durable_file(disk: &dyn Disk, path: &str, data: &[u8]) -> io::Result<()> {
    let path = Path::new(path);
    let mut file = disk.open(path, OpenMode::CreateNew)?;
    file.append(data)?;
    file.sync()?;
    disk.sync_dir(path.parent().unwrap_or(Path::new("/")))
}

/// The whole content of `path`, or `None` if it does not exist.
fn contents(disk: &dyn Disk, path: &str) -> io::Result<Option<Vec<u8>>> {
    let path = Path::new(path);
    if !disk.exists(path) {
        return Ok(None);
    }
    let file = disk.open(path, OpenMode::Existing)?;
    let mut buf = vec![0; file.len()? as usize];
    read_exact_at(file.as_ref(), &mut buf, 0)?;
    Ok(Some(buf))
}

fn append_to(disk: &dyn Disk, path: &str, data: &[u8]) -> io::Result<()> {
    disk.open(Path::new(path), OpenMode::Existing)?.append(data)
}

#[test]
fn synced_append_survives_crash() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            durable_dir(disk, "/data")?;
            durable_file(disk, "/data/x.log", b"hello")?;
            let mut file = disk.open(Path::new("/data/x.log"), OpenMode::Existing)?;
            file.append(b" world")?;
            file.sync()
        },
        |disk| contents(disk, "/data/x.log"),
    );
    assert_eq!(after.as_deref(), Some(&b"hello world"[..]));
}

#[test]
fn unsynced_append_is_lost_on_crash() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            durable_dir(disk, "/data")?;
            durable_file(disk, "/data/x.log", b"hello")?;
            append_to(disk, "/data/x.log", b" world")?;
            // Before the crash, reads see the pending append.
            let before = contents(disk, "/data/x.log")?;
            assert_eq!(before.as_deref(), Some(&b"hello world"[..]));
            Ok(())
        },
        |disk| contents(disk, "/data/x.log"),
    );
    assert_eq!(after.as_deref(), Some(&b"hello"[..]));
}

#[test]
fn synced_file_in_unsynced_directory_is_gone_after_crash() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            durable_dir(disk, "/data")?;
            let mut file = disk.open(Path::new("/data/new.log"), OpenMode::CreateNew)?;
            file.append(b"data")?;
            file.sync()
        },
        |disk| {
            Ok((
                disk.exists(Path::new("/data/new.log")),
                disk.list_dir(Path::new("/data"))?,
            ))
        },
    );
    assert_eq!(after, (false, Vec::<String>::new()));
}

#[test]
fn file_in_synced_directory_without_data_sync_comes_back_empty() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            durable_dir(disk, "/data")?;
            let mut file = disk.open(Path::new("/data/new.log"), OpenMode::CreateNew)?;
            file.append(b"data")?;
            disk.sync_dir(Path::new("/data"))
        },
        |disk| contents(disk, "/data/new.log"),
    );
    assert_eq!(after, Some(Vec::new()));
}

#[test]
fn unsynced_directory_is_gone_after_crash() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| disk.create_dir_all(Path::new("/data")),
        |disk| Ok(disk.exists(Path::new("/data"))),
    );
    assert!(!after);
}

#[test]
fn rename_then_sync_dir_is_durable() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            durable_dir(disk, "/data")?;
            durable_file(disk, "/data/x.tmp", b"state")?;
            disk.rename(Path::new("/data/x.tmp"), Path::new("/data/x"))?;
            disk.sync_dir(Path::new("/data"))
        },
        |disk| {
            Ok((
                contents(disk, "/data/x")?,
                disk.exists(Path::new("/data/x.tmp")),
            ))
        },
    );
    assert_eq!(after, (Some(b"state".to_vec()), false));
}

#[test]
fn rename_without_sync_dir_is_undone_by_crash() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            durable_dir(disk, "/data")?;
            durable_file(disk, "/data/x.tmp", b"state")?;
            disk.rename(Path::new("/data/x.tmp"), Path::new("/data/x"))
        },
        |disk| {
            Ok((
                contents(disk, "/data/x.tmp")?,
                disk.exists(Path::new("/data/x")),
            ))
        },
    );
    assert_eq!(after, (Some(b"state".to_vec()), false));
}

#[test]
fn removal_is_durable_only_after_sync_dir() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            durable_dir(disk, "/data")?;
            durable_file(disk, "/data/synced", b"a")?;
            durable_file(disk, "/data/unsynced", b"b")?;
            disk.remove_file(Path::new("/data/synced"))?;
            disk.sync_dir(Path::new("/data"))?;
            disk.remove_file(Path::new("/data/unsynced"))
        },
        |disk| disk.list_dir(Path::new("/data")),
    );
    assert_eq!(after, vec!["unsynced".to_string()]);
}

#[test]
fn list_dir_is_sorted() {
    let names = ["b", "a", "c10", "B", "c9", "0", "sub"];
    let after = across_crash(
        &seeded(),
        sim_disk(),
        move |disk| {
            durable_dir(disk, "/data")?;
            for name in names {
                durable_file(disk, &format!("/data/{name}"), name.as_bytes())?;
            }
            disk.create_dir_all(Path::new("/data/dir"))?;
            disk.sync_dir(Path::new("/data"))
        },
        |disk| disk.list_dir(Path::new("/data")),
    );
    assert_eq!(after, ["0", "B", "a", "b", "c10", "c9", "dir", "sub"]);
}

#[test]
fn truncate_then_sync_is_durable() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            durable_dir(disk, "/data")?;
            durable_file(disk, "/data/synced", b"0123456789")?;
            durable_file(disk, "/data/unsynced", b"0123456789")?;
            let mut file = disk.open(Path::new("/data/synced"), OpenMode::Existing)?;
            file.truncate(4)?;
            file.sync()?;
            let mut file = disk.open(Path::new("/data/unsynced"), OpenMode::Existing)?;
            file.truncate(4)?;
            assert_eq!(file.len()?, 4);
            Ok(())
        },
        |disk| {
            Ok((
                contents(disk, "/data/synced")?,
                contents(disk, "/data/unsynced")?,
            ))
        },
    );
    assert_eq!(after.0.as_deref(), Some(&b"0123"[..]));
    assert_eq!(after.1.as_deref(), Some(&b"0123456789"[..]));
}

#[test]
fn truncate_then_append_then_sync_keeps_the_order() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            durable_dir(disk, "/data")?;
            durable_file(disk, "/data/x.log", b"0123456789")?;
            let mut file = disk.open(Path::new("/data/x.log"), OpenMode::Existing)?;
            file.truncate(4)?;
            file.append(b"ab")?;
            file.sync()
        },
        |disk| contents(disk, "/data/x.log"),
    );
    assert_eq!(after.as_deref(), Some(&b"0123ab"[..]));
}

#[test]
fn errors_have_std_kinds() {
    let mut builder = seeded();
    builder.fs().capacity(8);
    let kinds = on_host(&builder, sim_disk(), |disk| {
        durable_dir(disk, "/data")?;
        durable_file(disk, "/data/x", b"1234")?;
        let missing = disk.open(Path::new("/data/missing"), OpenMode::Existing);
        let existing = disk.open(Path::new("/data/x"), OpenMode::CreateNew);
        let full = append_to(disk, "/data/x", b"56789");
        let kinds = [missing.err(), existing.err(), full.err()].map(|e| e.map(|e| e.kind()));
        // The failed append wrote nothing.
        assert_eq!(contents(disk, "/data/x")?.as_deref(), Some(&b"1234"[..]));
        Ok(kinds)
    })
    .expect("host failed");
    assert_eq!(
        kinds,
        [
            Some(io::ErrorKind::NotFound),
            Some(io::ErrorKind::AlreadyExists),
            Some(io::ErrorKind::StorageFull),
        ]
    );
}

#[test]
fn faulty_disk_composes_with_sim_disk() {
    let mut config = FaultConfig::none();
    config.sync_eio = 1.0;
    let faulty = FaultyDisk::new(sim_disk(), config, SEED);
    let handle = faulty.handle();
    let switch = handle.clone();
    let after = across_crash(
        &seeded(),
        Arc::new(faulty),
        move |disk| {
            switch.set_enabled(false);
            durable_dir(disk, "/data")?;
            durable_file(disk, "/data/x.log", b"hello")?;
            switch.set_enabled(true);
            let mut file = disk.open(Path::new("/data/x.log"), OpenMode::Existing)?;
            file.append(b" world")?;
            let e = file.sync().expect_err("sync should fail");
            assert_eq!(
                InjectedFault::of(&e).map(|f| f.kind),
                Some(FaultKind::SyncEio)
            );
            Ok(())
        },
        |disk| contents(disk, "/data/x.log"),
    );
    // The failed sync did not reach turmoil, so the append died in the crash.
    assert_eq!(after.as_deref(), Some(&b"hello"[..]));
    assert_eq!(handle.stats().get(FaultKind::SyncEio), 1);
    assert_eq!(handle.stats().total(), 1);
}

// SimDisk's mitigations of turmoil's path-keyed model (see sim/src/disk.rs).

#[test]
fn name_removed_and_created_again_keeps_the_new_data() {
    // A Raft log truncation deletes a segment, then appends recreate it.
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            durable_dir(disk, "/data")?;
            durable_file(disk, "/data/100.log", b"old entries")?;
            append_to(disk, "/data/100.log", b" unsynced")?;
            disk.remove_file(Path::new("/data/100.log"))?;
            durable_file(disk, "/data/100.log", b"new")?;
            assert_eq!(contents(disk, "/data/100.log")?, Some(b"new".to_vec()));
            Ok(())
        },
        |disk| contents(disk, "/data/100.log"),
    );
    assert_eq!(after, Some(b"new".to_vec()));
}

#[test]
fn directory_removed_and_created_again_survives() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            durable_dir(disk, "/p0")?;
            durable_file(disk, "/p0/0.log", b"x")?;
            disk.remove_dir_all(Path::new("/p0"))?;
            disk.create_dir_all(Path::new("/p0"))?;
            // Syncing the new directory before its parent is what made raw
            // turmoil drop it.
            disk.sync_dir(Path::new("/p0"))?;
            disk.sync_dir(Path::new("/"))?;
            assert!(disk.exists(Path::new("/p0")));
            Ok(())
        },
        |disk| disk.list_dir(Path::new("/p0")),
    );
    assert_eq!(after, Vec::<String>::new());
}

#[test]
fn removed_directory_leaves_no_files_behind() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            for dir in ["/x", "/y"] {
                durable_dir(disk, dir)?;
                disk.create_dir_all(Path::new(&format!("{dir}/d/sub")))?;
                disk.sync_dir(Path::new(dir))?;
                disk.sync_dir(Path::new(&format!("{dir}/d")))?;
                durable_file(disk, &format!("{dir}/d/sub/f"), b"data")?;
                disk.remove_dir_all(Path::new(&format!("{dir}/d")))?;
            }
            // Only /x's removal is made durable.
            disk.sync_dir(Path::new("/x"))
        },
        |disk| {
            let gone = ["/x/d", "/x/d/sub", "/x/d/sub/f", "/y/d/sub", "/y/d/sub/f"]
                .map(|p| !disk.exists(Path::new(p)));
            disk.create_dir_all(Path::new("/x/d"))?;
            let listings = [
                disk.list_dir(Path::new("/x/d"))?,
                disk.list_dir(Path::new("/y/d"))?,
            ];
            Ok((gone, listings))
        },
    );
    // /y/d's removal was not synced, so it is back, but emptied: its
    // contents' removals were made durable first, as a kernel may do.
    assert_eq!(after, ([true; 5], [vec![], vec![]]));
}

#[test]
fn rename_keeps_writes_pending_at_the_rename() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            durable_dir(disk, "/data")?;
            durable_file(disk, "/data/x", b"abc")?;
            append_to(disk, "/data/x", b"def")?;
            disk.rename(Path::new("/data/x"), Path::new("/data/y"))?;
            disk.sync_dir(Path::new("/data"))?;
            assert_eq!(contents(disk, "/data/y")?, Some(b"abcdef".to_vec()));
            Ok(())
        },
        |disk| contents(disk, "/data/y"),
    );
    // Durable although never synced after the append: SimDisk synced it
    // before the rename, which a kernel's writeback may also do.
    assert_eq!(after, Some(b"abcdef".to_vec()));
}

#[test]
fn writes_after_a_rename_through_a_new_handle_are_kept() {
    let after = across_crash(
        &seeded(),
        sim_disk(),
        |disk| {
            durable_dir(disk, "/data")?;
            durable_file(disk, "/data/x", b"abc")?;
            disk.rename(Path::new("/data/x"), Path::new("/data/y"))?;
            let mut file = disk.open(Path::new("/data/y"), OpenMode::Existing)?;
            file.append(b"def")?;
            assert_eq!(contents(disk, "/data/y")?, Some(b"abcdef".to_vec()));
            file.sync()?;
            disk.sync_dir(Path::new("/data"))
        },
        |disk| contents(disk, "/data/y"),
    );
    assert_eq!(after, Some(b"abcdef".to_vec()));
}

/// turmoil used raw, for the cases above. If this starts failing, turmoil
/// changed its model: the mitigations in SimDisk may no longer be needed.
#[test]
fn raw_turmoil_still_needs_the_mitigations() {
    use std::os::unix::fs::FileExt;
    use turmoil::fs::shim::std::fs as simfs;
    let found = on_host(&seeded(), sim_disk(), |_| {
        simfs::create_dir("/d")?;
        simfs::sync_dir("/")?;
        let old = simfs::File::create("/d/f")?;
        old.write_all_at(b"old", 0)?;
        old.sync_data()?;
        simfs::sync_dir("/d")?;
        simfs::remove_file("/d/f")?;
        let new = simfs::File::create("/d/f")?;
        new.write_all_at(b"new", 0)?;
        new.sync_data()?;
        simfs::sync_dir("/d")?;
        simfs::read("/d/f")
    })
    .expect("host failed");
    assert_eq!(found, b"", "remove then create again no longer loses data");
}
