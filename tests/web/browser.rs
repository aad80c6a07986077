//! A real headless Chromium for the web view tests: Debian's `chromium`,
//! driven by `tests/web/driver.cjs` (playwright-core, pinned in
//! `tests/web/package.json` and installed with `npm ci` under
//! `target/web-node` on first use) over a JSON-lines pipe.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{Value, json};

/// The Chromium binary (`CHROMIUM`, else Debian's).
pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from)
}

/// `target/`, from the test executable's path (`target/debug/deps/web-...`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors().nth(3).expect("target dir").to_owned()
}

/// Where screenshots go: `target/web-artifacts/`.
pub fn artifacts() -> PathBuf {
    let dir = target_dir().join("web-artifacts");
    std::fs::create_dir_all(&dir).expect("creating target/web-artifacts");
    dir
}

/// Whether the browser tests run: `VIGIL_WEB_SKIP=1` skips them on purpose;
/// a missing tool fails with what to install (a green run never hides one).
pub fn required() -> bool {
    if std::env::var("VIGIL_WEB_SKIP").is_ok_and(|v| v == "1") {
        eprintln!("VIGIL_WEB_SKIP=1: skipping the web view browser test");
        return false;
    }
    for tool in ["node", "npm"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` is missing: the web view tests need `apt-get install chromium nodejs npm` \
             (or VIGIL_WEB_SKIP=1 to skip them)"
        );
    }
    assert!(
        chromium().exists(),
        "{} is missing: the web view tests need `apt-get install chromium` (or CHROMIUM=path, \
         or VIGIL_WEB_SKIP=1 to skip them)",
        chromium().display()
    );
    true
}

/// Installs playwright-core (once, whichever test comes first; the others
/// wait on a file lock) and returns the path of its package.
pub fn playwright_core() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let dir = target_dir().join("web-node");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".install.lock")).unwrap();
    lock.lock().expect("locking target/web-node");
    let module = dir.join("node_modules/playwright-core");
    let wanted = std::fs::read(source.join("package-lock.json")).unwrap();
    let installed = std::fs::read(dir.join("package-lock.json")).ok();
    if installed.as_ref() != Some(&wanted) || !module.join("package.json").exists() {
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(source.join(file), dir.join(file)).unwrap();
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&dir)
            .output()
            .expect("running npm ci");
        assert!(
            out.status.success(),
            "npm ci in {} failed (is the npm registry reachable?):\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    module
}

/// One browser (one context, one page), killed when dropped.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    log: PathBuf,
}

impl Browser {
    /// Starts Chromium; `log_dir` keeps the driver's stderr.
    pub fn start(name: &str, log_dir: &Path) -> Self {
        let log = log_dir.join(format!("browser-{name}.log"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/driver.cjs");
        let mut child = Command::new("node")
            .arg(script)
            .env("PLAYWRIGHT_CORE", playwright_core())
            .env("CHROMIUM", chromium())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting node");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut browser = Self {
            child,
            stdin,
            stdout,
            log,
        };
        let ready = browser.read();
        assert_eq!(ready, Ok(json!("ready")), "the browser did not start");
        browser
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("reading the driver");
        if line.is_empty() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("the browser driver exited:\n{log}");
        }
        let reply: Value = serde_json::from_str(&line).expect("a JSON reply");
        if reply["ok"] == true {
            Ok(reply["value"].clone())
        } else {
            Err(reply["error"].as_str().unwrap_or("?").to_owned())
        }
    }

    /// Sends a command; returns its value or the driver's error.
    pub fn try_cmd(&mut self, command: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{command}").expect("writing to the driver");
        self.read()
    }

    /// Sends a command; panics on error.
    pub fn cmd(&mut self, command: Value) -> Value {
        let what = command.to_string();
        self.try_cmd(command)
            .unwrap_or_else(|e| panic!("browser command {what} failed: {e}"))
    }

    /// Opens `url`; returns (HTTP status, final URL).
    pub fn goto(&mut self, url: &str) -> (u16, String) {
        let v = self.cmd(json!({"op": "goto", "url": url}));
        (
            v["status"].as_u64().unwrap_or(0) as u16,
            v["url"].as_str().unwrap_or("").to_owned(),
        )
    }

    /// Runs `js` (a function body: use `return`) in the page.
    pub fn eval(&mut self, js: &str) -> Value {
        self.cmd(json!({"op": "eval", "js": js}))
    }

    /// Waits until `js` (a function body) returns something truthy; returns it.
    pub fn wait(&mut self, what: &str, js: &str) -> Value {
        self.try_cmd(json!({"op": "wait", "js": js}))
            .unwrap_or_else(|e| panic!("waiting in the browser for {what}: {e}"))
    }

    /// Clicks the element `selector` names.
    pub fn click(&mut self, selector: &str) {
        self.cmd(json!({"op": "click", "selector": selector}));
    }

    /// Clicks at page coordinates.
    pub fn click_at(&mut self, x: f64, y: f64) {
        self.cmd(json!({"op": "clickAt", "x": x, "y": y}));
    }

    /// Types `value` into `selector`.
    pub fn fill(&mut self, selector: &str, value: &str) {
        self.cmd(json!({"op": "fill", "selector": selector, "value": value}));
    }

    /// Saves a screenshot as `target/web-artifacts/<name>.png`.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        let path = artifacts().join(format!("{name}.png"));
        self.cmd(json!({"op": "screenshot", "path": path}));
        path
    }

    /// The page's errors so far (console errors, CSP violations, exceptions).
    pub fn problems(&mut self) -> Vec<String> {
        serde_json::from_value(self.cmd(json!({"op": "problems"}))).unwrap()
    }

    /// The browser's cookies.
    pub fn cookies(&mut self) -> Vec<Value> {
        serde_json::from_value(self.cmd(json!({"op": "cookies"}))).unwrap()
    }

    /// Makes the browser itself answer `url_glob` with `html` (another
    /// origin's page).
    pub fn serve_at(&mut self, url_glob: &str, html: &str) {
        self.cmd(json!({"op": "serveAt", "url": url_glob, "html": html}));
    }

    /// Signs in at `base` with `token` through the form; waits for the graph
    /// page.
    pub fn sign_in(&mut self, base: &str, token: &str) {
        let (_, url) = self.goto(&format!("{base}/"));
        assert_eq!(url, format!("{base}/login"), "no session: sent to sign in");
        self.fill("#token", token);
        self.click("#sign-in");
        self.cmd(json!({"op": "waitForUrl", "url": format!("{base}/")}));
        self.wait(
            "the page's script and the first snapshot",
            "return window.vigil && window.vigil.cy() && window.vigil.state.renders > 0",
        );
    }

    /// Where node or edge `id` is drawn, in page coordinates (`at` along an
    /// edge, 0 at its source).
    pub fn point_of(&mut self, id: &str, at: f64) -> (f64, f64) {
        let js = format!(
            "const cy = window.vigil.cy(); const e = cy.getElementById({id});
             const box = document.getElementById('graph').getBoundingClientRect();
             let p;
             if (e.isNode()) p = e.renderedPosition();
             else {{ const s = e.renderedSourceEndpoint(), t = e.renderedTargetEndpoint();
                    p = {{ x: s.x + (t.x - s.x) * {at}, y: s.y + (t.y - s.y) * {at} }}; }}
             return [box.left + p.x, box.top + p.y];",
            id = json!(id)
        );
        let v = self.eval(&js);
        (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
    }

    /// How many sampled points along edge `id` are drawn red, of how many,
    /// read from the pixels Cytoscape rendered (its PNG export of the
    /// viewport), not from the data.
    pub fn red_pixels_along(&mut self, id: &str) -> (u64, u64) {
        let js = format!(
            "const cy = window.vigil.cy(); const e = cy.getElementById({id});
             const s = e.renderedSourceEndpoint(), t = e.renderedTargetEndpoint();
             const img = new Image();
             await new Promise((ok, bad) => {{ img.onload = ok; img.onerror = bad;
               img.src = cy.png({{ full: false, scale: 1, bg: '#ffffff' }}); }});
             const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
             const g = c.getContext('2d'); g.drawImage(img, 0, 0);
             const k = img.width / cy.width();
             let red = 0, total = 0;
             for (const f of [0.12, 0.18, 0.24, 0.3, 0.7, 0.76, 0.82]) {{
               const x = Math.round((s.x + (t.x - s.x) * f) * k), y = Math.round((s.y + (t.y - s.y) * f) * k);
               const d = g.getImageData(x - 2, y - 2, 5, 5).data;
               let hit = false;
               for (let i = 0; i < d.length; i += 4) if (d[i] > 180 && d[i + 1] < 90 && d[i + 2] < 90) hit = true;
               total += 1; if (hit) red += 1;
             }}
             return [red, total];",
            id = json!(id)
        );
        let v = self.eval(&js);
        (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "close"}));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
