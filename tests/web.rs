//! The web view in a real headless Chromium, against a real controller fed
//! by real sidecars (traffic from curl): sign-in, the graph and its red
//! violation (read from the rendered pixels), details on click, modes both
//! ways with vigilctl, live updates without a reload, the read-only viewer,
//! and refusals for requests without a session or from another site.
//! Screenshots go to `target/web-artifacts/`.
//!
//! Needs `chromium`, `node` and `npm` (`apt-get install chromium nodejs
//! npm`); playwright-core is installed by `npm ci` under `target/web-node`
//! on first use. `VIGIL_WEB_SKIP=1` skips these tests on purpose.

#[path = "web/browser.rs"]
mod browser;
mod common;

use std::path::Path;

use browser::Browser;
use common::{Controller, Proxy, Upstream, curl, hosts_file, wait_for};
use serde_json::json;

/// A controller, two workloads (`web`, `api`) with their sidecars, a package
/// index, a mining pool and a CDN, all on loopback.
struct Mesh {
    ctl: Controller,
    web: Proxy,
    _api: Proxy,
    base: String,
    api_url: String,
    pypi_url: String,
    pool_url: String,
    cdn_url: String,
    pool_node: String,
    cdn_node: String,
    pypi_node: String,
    _apps: Vec<Upstream>,
}

fn mesh(dir: &Path) -> Mesh {
    let ctl = Controller::start(&dir.join("data"), dir);
    let (pypi, pool, cdn) = (
        Upstream::start("pypi"),
        Upstream::start("pool"),
        Upstream::start("cdn"),
    );
    let (web_app, api_app) = (Upstream::start("web"), Upstream::start("api"));
    let hosts = hosts_file(dir, &["pypi.test", "pool.test", "cdn.test", "api"]);
    let web = Proxy::start("web", ctl.grpc, web_app.addr, &hosts, dir);
    let api = Proxy::start("api", ctl.grpc, api_app.addr, &hosts, dir);
    Mesh {
        base: format!("http://{}", ctl.http),
        api_url: format!("http://api:{}/v1/users/8412", api.inbound.port()),
        pypi_url: format!("http://pypi.test:{}/simple/numpy/", pypi.addr.port()),
        pool_url: format!("http://pool.test:{}/", pool.addr.port()),
        cdn_url: format!("http://cdn.test:{}/lib.js", cdn.addr.port()),
        pool_node: format!("external:pool.test:{}", pool.addr.port()),
        cdn_node: format!("external:cdn.test:{}", cdn.addr.port()),
        pypi_node: format!("external:pypi.test:{}", pypi.addr.port()),
        ctl,
        web,
        _api: api,
        _apps: vec![pypi, pool, cdn, web_app, api_app],
    }
}

impl Mesh {
    /// Learning: internet -> web, web -> api, web -> pypi; then enforcement
    /// and the violation: web -> pool, blocked.
    fn learn_then_violate(&self) {
        assert_eq!(self.web.get(&self.api_url).0, 200);
        assert_eq!(self.web.get(&self.pypi_url).0, 200);
        assert_eq!(curl(&[&format!("http://{}/lab", self.web.inbound)]).0, 200);
        self.ctl
            .wait_edge("workload:default/web", "workload:default/api", 1);
        self.ctl
            .wait_edge("workload:default/web", &self.pypi_node, 1);
        self.ctl.wait_edge("internet", "workload:default/web", 1);
        self.ctl.set_mode(&["enforcement"]);
        self.web.wait_enforce(true);
        let (status, body) = self.web.get(&self.pool_url);
        assert_eq!(status, 403, "the pool is blocked: {body}");
        self.ctl
            .wait_edge("workload:default/web", &self.pool_node, 1);
    }

    fn mode_of(&self, namespace: &str) -> serde_json::Value {
        self.ctl.json(&["mode"])["namespaces"][namespace].clone()
    }
}

fn edge_id(source: &str, target: &str) -> String {
    format!("edge:{source}->{target}")
}

/// `curl -i`: (status, headers in lower case, body).
fn http(args: &[&str]) -> (u16, String, String) {
    let mut all = vec!["-i"];
    all.extend_from_slice(args);
    let (status, text) = curl(&all);
    let text = text.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    (status, head.to_lowercase(), body.to_owned())
}

/// Signs in with curl; returns the session cookie (`vigil_session=...`).
fn curl_sign_in(base: &str, token: &str) -> String {
    let (status, head, _) = http(&[
        "-X",
        "POST",
        "--data-urlencode",
        &format!("token={token}"),
        &format!("{base}/login"),
    ]);
    assert_eq!(status, 303, "{head}");
    let line = head
        .lines()
        .find(|l| l.starts_with("set-cookie: vigil_session="))
        .expect("a session cookie");
    line["set-cookie: ".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn web_view_shows_the_live_graph_and_steers_modes() {
    if !browser::required() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let m = mesh(tmp.path());
    m.learn_then_violate();
    let mut b = Browser::start("admin", tmp.path());

    // Sign-in: no session, no data, the sign-in form.
    let (_, url) = b.goto(&format!("{}/", m.base));
    assert_eq!(url, format!("{}/login", m.base));
    b.screenshot("01-sign-in");
    b.sign_in(&m.base, &m.ctl.token());
    let cookie = b
        .cookies()
        .into_iter()
        .find(|c| c["name"] == "vigil_session")
        .expect("a session cookie");
    assert_eq!(
        (&cookie["httpOnly"], &cookie["sameSite"]),
        (&json!(true), &json!("Strict"))
    );

    // The graph: the expected nodes and edges.
    let web = "workload:default/web";
    let expected = json!([
        web,
        "workload:default/api",
        "internet",
        m.pypi_node,
        m.pool_node,
        "ns:default",
        edge_id("internet", web),
        edge_id(web, "workload:default/api"),
        edge_id(web, &m.pypi_node),
        edge_id(web, &m.pool_node),
    ]);
    b.wait(
        "every node and edge drawn",
        &format!(
            "const cy = window.vigil.cy();
             return {expected}.every((id) => cy.getElementById(id).nonempty());"
        ),
    );
    assert_eq!(
        b.eval(&format!(
            "return window.vigil.cy().getElementById({}).parent().id()",
            json!(web)
        )),
        json!("ns:default"),
        "workloads are grouped by namespace"
    );

    // The violation is red on screen; a baseline edge is not.
    let pool_edge = edge_id(web, &m.pool_node);
    let pypi_edge = edge_id(web, &m.pypi_node);
    let style = |b: &mut Browser, id: &str| {
        b.eval(&format!(
            "return window.vigil.cy().getElementById({}).style('line-color')",
            json!(id)
        ))
    };
    assert_eq!(style(&mut b, &pool_edge), json!("rgb(224,36,43)"));
    assert_ne!(style(&mut b, &pypi_edge), json!("rgb(224,36,43)"));
    let (red, total) = b.red_pixels_along(&pool_edge);
    assert!(
        red * 2 > total,
        "the pool edge is drawn red: {red}/{total} points"
    );
    let (red, _) = b.red_pixels_along(&pypi_edge);
    assert_eq!(red, 0, "the baseline pypi edge is not red");
    b.screenshot("02-graph-violation-red");

    // Click the web service: its callers, calls, endpoints, egress, alerts.
    let (x, y) = b.point_of(web, 0.0);
    b.click_at(x, y);
    let details = b.wait(
        "the web service's details",
        "const t = document.getElementById('panel-details').textContent;
         return t.includes('Inbound callers') && t.includes('default/web') ? t : null;",
    );
    let details = details.as_str().unwrap();
    for want in [
        "Outbound calls",
        "GET /v1/users/{id}",
        "Egress domains",
        "pool.test",
        "pypi.test",
        "unknown_egress",
        "enforcement",
    ] {
        assert!(details.contains(want), "details lack {want:?}: {details}");
    }
    b.screenshot("03-service-details");

    // Click the violating edge: its endpoints, not in the baseline.
    let (x, y) = b.point_of(&pool_edge, 0.3);
    b.click_at(x, y);
    let details = b.wait(
        "the pool edge's details",
        "const t = document.getElementById('panel-details').textContent;
         return t.includes('Endpoints') && t.includes('violation') ? t : null;",
    );
    assert!(
        details.as_str().unwrap().contains("not in baseline"),
        "{details}"
    );

    // Alerts: newest first, select one to highlight its path.
    b.click("#tab-alerts");
    b.wait(
        "the pool alert listed",
        "return [...document.querySelectorAll('#alerts li')].some((li) => li.textContent.includes('pool.test'))",
    );
    b.click("#alerts li[data-key^='unknown_egress|default/web|pool.test']");
    b.wait(
        "the alert's path highlighted",
        &format!(
            "return window.vigil.cy().getElementById({}).hasClass('hl')",
            json!(pool_edge)
        ),
    );
    b.screenshot("04-alert-highlighted");

    // Accept it into the baseline (admin): the edge is learned.
    b.click("#alerts li[data-key^='unknown_egress|default/web|pool.test'] button.accept");
    b.wait(
        "the acceptance confirmed",
        "return document.querySelector('#alerts .accepted') !== null",
    );
    wait_for("the pool edge in the baseline", || {
        let edge = m.ctl.wait_edge(web, &m.pool_node, 1);
        (edge["in_baseline"] == true).then_some(())
    });

    // Modes: the page changes what vigilctl shows ...
    b.click("#tab-modes");
    let stability = b.eval(
        "return document.querySelector(\"#modes tr[data-ns='default'] .stability\").textContent",
    );
    let stability = stability.as_str().unwrap();
    assert!(
        stability.starts_with("learning: growing") || stability.starts_with("learning: stable"),
        "the namespace's learning stability: {stability}"
    );
    b.click("#modes tr[data-ns='default'] button[data-mode='alert-only']");
    wait_for("vigilctl to show alert-only", || {
        (m.mode_of("default") == json!({"mode": "enforcement", "alert_only": true})).then_some(())
    });
    // ... and vigilctl changes what the page shows, live.
    b.eval("window.__noReload = 'still here'; return null");
    m.ctl.set_mode(&["learning", "--namespace", "default"]);
    b.wait(
        "the page to show learning",
        "const on = document.querySelector(\"#modes tr[data-ns='default'] button.on\");
         return on && on.dataset.mode === 'learning';",
    );
    // Before enforcement: the controller's dry run of the last hour.
    b.wait(
        "the dry run beside the namespace",
        "const d = document.querySelector(\"#modes tr[data-ns='default'] .dry-run\");
         return d && d.textContent.startsWith('dry run (last hour');",
    );
    b.screenshot("05-modes");

    // A live update: new traffic appears without a reload, keeping the
    // user's zoom, pan and selection.
    b.eval(&format!(
        "const cy = window.vigil.cy(); cy.zoom(1.3); cy.pan({{ x: 40, y: 30 }});
         window.vigil.select({}); return null;",
        json!(web)
    ));
    let before = b.eval("const cy = window.vigil.cy(); return [cy.zoom(), cy.pan().x, cy.pan().y]");
    assert_eq!(m.web.get(&m.cdn_url).0, 200);
    b.wait(
        "the CDN to appear live",
        &format!(
            "return window.vigil.cy().getElementById({}).nonempty()",
            json!(m.cdn_node)
        ),
    );
    assert_eq!(
        b.eval("return window.__noReload || null"),
        json!("still here"),
        "no reload"
    );
    let after = b.eval("const cy = window.vigil.cy(); return [cy.zoom(), cy.pan().x, cy.pan().y]");
    assert_eq!(before, after, "zoom and pan kept");
    assert_eq!(
        b.eval(&format!(
            "return window.vigil.cy().getElementById({}).selected()",
            json!(web)
        )),
        json!(true),
        "selection kept"
    );

    // Scale helpers: filter by name, collapse a namespace.
    b.fill("#search", "pool");
    b.wait(
        "api filtered out",
        "return window.vigil.cy().getElementById('workload:default/api').hasClass('hidden')",
    );
    b.fill("#search", "");
    b.eval("window.vigil.toggleCollapse('default'); return null");
    let collapsed = b.eval(&format!(
        "const cy = window.vigil.cy();
         return [cy.getElementById({web}).empty(), cy.getElementById('agg:ns:default->' + {pool}).style('line-color')];",
        web = json!(web),
        pool = json!(m.pool_node)
    ));
    assert_eq!(collapsed, json!([true, "rgb(224,36,43)"]), "collapsed");
    b.screenshot("06-namespace-collapsed");
    b.eval("window.vigil.toggleCollapse('default'); return null");

    // Quarantine the web service from its details, then release it.
    let quarantined = || {
        let (status, body) = curl(&[
            "-H",
            &format!("authorization: Bearer {}", m.ctl.token()),
            &format!("{}/api/v1/quarantine", m.base),
        ]);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    b.eval(&format!("window.vigil.select({}); return null", json!(web)));
    b.click("#quarantine");
    wait_for("the controller to quarantine web", || {
        (quarantined()[0]["workload"] == "default/web").then_some(())
    });
    b.wait(
        "web drawn as quarantined",
        &format!(
            "return window.vigil.cy().getElementById({}).hasClass('quarantined')
               && document.getElementById('panel-details').textContent.includes('Quarantined since')",
            json!(web)
        ),
    );
    b.screenshot("07-quarantined");
    b.click("#quarantine");
    wait_for("the controller to release web", || {
        (quarantined() == json!([])).then_some(())
    });

    // Hostile names are text, never markup.
    b.eval(
        "window.vigil.applyDelta({ nodes: { upsert: [{ id: 'external:<img id=pwned src=x>:80', kind: 'external',
           namespace: null, name: '<img id=pwned src=x>:80', in_baseline: false, sidecars: 0 }], remove: [] },
           edges: { upsert: [], remove: [] }, alerts: { upsert: [], remove: [] } });
         window.vigil.select('external:<img id=pwned src=x>:80'); return null;",
    );
    assert_eq!(
        b.eval("return [document.getElementById('pwned') === null, document.getElementById('panel-details').textContent.includes('<img id=pwned')]"),
        json!([true, true])
    );

    assert_eq!(
        b.problems(),
        Vec::<String>::new(),
        "no console errors or CSP violations"
    );

    // Sign out: the cookie no longer opens anything.
    let session = format!("vigil_session={}", cookie["value"].as_str().unwrap());
    b.click("#logout");
    b.cmd(json!({"op": "waitForUrl", "url": format!("{}/login", m.base)}));
    let (status, _) = curl(&[
        "-H",
        &format!("cookie: {session}"),
        &format!("{}/api/v1/graph", m.base),
    ]);
    assert_eq!(status, 401, "a signed-out session is dead");
}

#[test]
fn web_viewer_reads_only_and_strangers_are_refused() {
    if !browser::required() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let m = mesh(tmp.path());
    m.learn_then_violate();
    let base = m.base.as_str();
    let data = tmp.path().join("data");
    let viewer = std::fs::read_to_string(data.join("viewer.token"))
        .expect("the controller creates viewer.token")
        .trim()
        .to_owned();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("viewer.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Without a session: nothing but the sign-in form.
    let (status, head, _) = http(&[&format!("{base}/")]);
    assert_eq!(status, 303);
    assert!(head.contains("location: /login"), "{head}");
    for path in [
        "/api/v1/graph",
        "/api/v1/alerts",
        "/api/v1/events",
        "/ui/session",
        "/assets/app.js",
    ] {
        assert_eq!(curl(&[&format!("{base}{path}")]).0, 401, "{path}");
    }
    let (status, head, body) = http(&[&format!("{base}/login")]);
    assert_eq!(status, 200);
    assert!(body.contains("name=\"token\""));
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-frame-options: deny"), "{head}");

    // Sign-in: a wrong token gets no cookie; a form from another site is
    // refused; the cookie is HttpOnly, Strict, and Secure behind TLS.
    let (status, head, _) = http(&["-X", "POST", "-d", "token=nope", &format!("{base}/login")]);
    assert_eq!(status, 401);
    assert!(!head.contains("set-cookie"), "{head}");
    let (status, head, _) = http(&[
        "-X",
        "POST",
        "-H",
        "origin: http://evil.test",
        "--data-urlencode",
        &format!("token={}", m.ctl.token()),
        &format!("{base}/login"),
    ]);
    assert_eq!(status, 403);
    assert!(!head.contains("set-cookie"), "{head}");
    let (_, head, _) = http(&[
        "-X",
        "POST",
        "-H",
        "x-forwarded-proto: https",
        "--data-urlencode",
        &format!("token={}", m.ctl.token()),
        &format!("{base}/login"),
    ]);
    assert!(
        head.contains("httponly; samesite=strict; max-age=28800; secure"),
        "{head}"
    );
    let admin = curl_sign_in(base, &m.ctl.token());

    // Cookie requests that change things need the CSRF token and our origin.
    let (status, session) = curl(&[
        "-H",
        &format!("cookie: {admin}"),
        &format!("{base}/ui/session"),
    ]);
    assert_eq!(status, 200);
    let csrf = serde_json::from_str::<serde_json::Value>(&session).unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_owned();
    let put = |headers: &[&str]| {
        let mut args = vec!["-X", "PUT", "-H", "content-type: application/json"];
        for h in headers {
            args.extend(["-H", h]);
        }
        let url = format!("{base}/api/v1/mode");
        args.extend(["-d", r#"{"mode":"enforcement","alert_only":true}"#, &url]);
        curl(&args).0
    };
    let cookie_h = format!("cookie: {admin}");
    let csrf_h = format!("x-csrf-token: {csrf}");
    assert_eq!(put(&[&cookie_h]), 403, "no CSRF token");
    assert_eq!(
        put(&[&cookie_h, "x-csrf-token: forged"]),
        403,
        "a forged one"
    );
    assert_eq!(put(&[&cookie_h, &csrf_h, "origin: http://evil.test"]), 403);
    assert_eq!(
        put(&[&cookie_h, &csrf_h, "sec-fetch-site: cross-site"]),
        403
    );
    assert_eq!(
        put(&[&cookie_h, &csrf_h, "sec-fetch-site: same-site"]),
        403,
        "another port"
    );
    let (status, _) = curl(&[
        "-H",
        &cookie_h,
        "-H",
        "sec-fetch-site: cross-site",
        &format!("{base}/api/v1/graph"),
    ]);
    assert_eq!(status, 403, "a cross-site read");
    assert_eq!(
        m.mode_of("default"),
        json!({"mode": "enforcement", "alert_only": false})
    );

    // The viewer token reads and changes nothing, by bearer or in the page.
    let bearer = format!("authorization: Bearer {viewer}");
    assert_eq!(
        curl(&["-H", &bearer, &format!("{base}/api/v1/graph")]).0,
        200
    );
    assert_eq!(put(&[&bearer]), 403);
    let mut b = Browser::start("viewer", tmp.path());
    b.sign_in(base, &viewer);
    b.wait(
        "the violation drawn for the viewer too",
        &format!(
            "return window.vigil.cy().getElementById({}).nonempty()",
            json!(edge_id("workload:default/web", &m.pool_node))
        ),
    );
    b.click("#tab-modes");
    assert_eq!(
        b.eval("return [...document.querySelectorAll('#modes button')].every((x) => x.disabled)"),
        json!(true),
        "the viewer's mode buttons are disabled"
    );
    b.click("#tab-alerts");
    assert_eq!(
        b.eval("return document.querySelectorAll('#alerts li').length > 0 && document.querySelectorAll('#alerts button.accept').length === 0"),
        json!(true),
        "alerts listed, with nothing to accept for a viewer"
    );
    b.eval("window.vigil.select('workload:default/web'); return null");
    assert_eq!(
        b.eval("return document.getElementById('quarantine') === null"),
        json!(true),
        "no quarantine button for a viewer"
    );
    b.click("#tab-modes");
    b.screenshot("08-viewer");
    let status = b.eval(
        "const s = await (await fetch('/ui/session')).json();
         const r = await fetch('/api/v1/mode', { method: 'PUT', headers: { 'content-type': 'application/json',
           'x-csrf-token': s.csrf }, body: JSON.stringify({ mode: 'learning' }) });
         return r.status;",
    );
    assert_eq!(
        status,
        json!(403),
        "the viewer's session cannot change modes"
    );
    assert_eq!(
        m.mode_of("default"),
        json!({"mode": "enforcement", "alert_only": false})
    );

    // A signed-in admin's browser visits an attacker's site, which posts a
    // mode change to the controller (a text/plain form shaped as JSON, and
    // a credentialed fetch): the session cookie stays home.
    let mut b = Browser::start("attacked", tmp.path());
    b.sign_in(base, &m.ctl.token());
    let target = format!("{base}/api/v1/mode");
    let html = format!(
        r#"<html><body>
        <form id="f" method="POST" action="{target}" enctype="text/plain">
          <input name='{{"mode":"learning","x":"' value='"}}'>
        </form>
        <script>
          fetch("{target}", {{ method: "POST", credentials: "include", mode: "no-cors",
            headers: {{ "content-type": "text/plain" }}, body: '{{"mode":"learning"}}' }})
            .finally(() => document.getElementById("f").submit());
        </script></body></html>"#
    );
    b.serve_at("http://evil.test/**", &html);
    b.goto("http://evil.test/");
    b.cmd(json!({"op": "waitForUrl", "url": target}));
    let body = b.eval("return document.body.textContent");
    assert!(body.as_str().unwrap().contains("error"), "refused: {body}");
    assert_eq!(
        m.mode_of("default"),
        json!({"mode": "enforcement", "alert_only": false}),
        "the attacker's site changed nothing"
    );
    // The same from a notebook's own server on another port of the same
    // host: the same *site*, so the browser does send the Strict cookie;
    // the origin check refuses it.
    b.serve_at("http://127.0.0.1:1/**", &html);
    b.goto("http://127.0.0.1:1/");
    b.cmd(json!({"op": "waitForUrl", "url": target}));
    let body = b.eval("return document.body.textContent");
    assert!(
        body.as_str()
            .unwrap()
            .contains("cross-origin request refused"),
        "the cookie came along and was refused: {body}"
    );
    assert_eq!(
        m.mode_of("default"),
        json!({"mode": "enforcement", "alert_only": false}),
        "a page on another port changed nothing"
    );
}

/// The web view at scale (500 workloads, 5,000 edges) in a real Chromium:
/// prints the first render and live update times. A benchmark, not a test:
/// `cargo nextest run --workspace --run-ignored only -E 'test(web_bench)'
/// --no-capture`.
#[test]
#[ignore = "a benchmark: run it on purpose"]
fn web_bench_500_workloads_5000_edges() {
    if !browser::required() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/bench.cjs");
    let out = std::process::Command::new("node")
        .arg(script)
        .env("PLAYWRIGHT_CORE", browser::playwright_core())
        .env("CHROMIUM", browser::chromium())
        .env(
            "BENCH_SCREENSHOT",
            browser::artifacts().join("bench-500-workloads.png"),
        )
        .output()
        .expect("running node");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the benchmark failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("web view, 500 workloads and 5,000 edges: {text}");
}
