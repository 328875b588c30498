//! `ssp demo`, as the README's first command runs it: the curl commands it prints are run as
//! printed, with the answers the README promises.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::curl;

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid: SIGTERM, so the demo seals its audit.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Runs one printed command with `sh`; returns curl's output (`-i`: head and body) and status.
fn run(command: &str) -> (String, bool) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{} --max-time 10 -sS", command.trim_end()))
        .output()
        .expect("sh");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

#[test]
fn the_commands_the_demo_prints_get_the_answers_it_says() {
    if curl().is_none() {
        eprintln!("note: curl not on PATH; skipping the demo test");
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssp"))
        .arg("demo")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ssp demo");
    let stdout = child.stdout.take().unwrap();
    let _demo = Demo(child);
    let (lines, printed) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    while !text.contains("Ctrl-C stops the demo.") {
        let line = printed
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the demo printed no instructions within 20 s: {text}"));
        text.push_str(&line);
        text.push('\n');
    }
    // Each command is a block of lines starting `curl -i`, continued with `\`.
    let commands: Vec<String> = text
        .split("\n\n")
        .filter(|block| block.starts_with("curl -i"))
        .map(str::to_string)
        .collect();
    assert_eq!(commands.len(), 4, "{text}");

    let (get, ok) = run(&commands[0]);
    assert!(ok && get.starts_with("HTTP/1.1 200"), "{get}");
    assert!(get.contains("\"resourceType\":\"Bundle\""), "{get}");
    let (post, ok) = run(&commands[1]);
    assert!(commands[1].contains(" -d '{"), "{}", commands[1]);
    assert!(ok && post.starts_with("HTTP/1.1 200"), "{post}");
    assert!(
        post.contains("\"message\":\"Exemption has been found\""),
        "{post}"
    );
    let (refused, ok) = run(&commands[2]);
    assert!(ok && refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        refused.contains("FOT_CHECK_FAILED_MESSAGESENDER_200000000002"),
        "{refused}"
    );
    let (_, ok) = run(&commands[3]);
    assert!(!ok, "the revoked certificate was served");
}
