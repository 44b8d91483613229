//! The memberships' state machines, driven through the `Membership` seam against an in-memory
//! Admin API (crate::testing::FakeCaddy: the real registry for pool mode, Caddy's config rules
//! for config edits). The Python tests run the same transitions end to end with a real Caddy.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::config_edit::site::Target;
use super::config_edit::{ConfigEditSettings, EventsSetting, Reconciler};
use super::pool::{PoolMember, PoolSettings};
use super::{follow, join, CaddyLink, JoinMode, Membership, Step};
use crate::state::{lock, CaddyState, Control, Phase};
use crate::testing::fake_caddy::{FakeCaddy, Fault};
use crate::upstream::Upstream;

const APP: &str = "10.0.0.5:8000";

fn link(caddy: &FakeCaddy) -> CaddyLink {
    CaddyLink {
        client: caddy.client(),
        state: Arc::new(Mutex::new(CaddyState {
            admin: "http://fake-caddy:2019".into(),
            ..Default::default()
        })),
        control: Arc::new(Control::default()),
    }
}

fn pool_member(caddy: &FakeCaddy, lease: Duration, weight: u32) -> (PoolMember, CaddyLink) {
    let link = link(caddy);
    let settings = PoolSettings {
        name: "api".into(),
        lease,
        weight,
    };
    (PoolMember::new(link.clone(), settings, APP.into()), link)
}

fn registrations(caddy: &FakeCaddy) -> usize {
    caddy
        .requests()
        .iter()
        .filter(|r| *r == "POST /beacon/pools/api/register")
        .count()
}

// --- pool mode ---------------------------------------------------------------------------------

#[test]
fn registers_then_reads_the_verdict_then_renews_after_a_third_of_the_lease() {
    let caddy = FakeCaddy::with_pool("api");
    let (mut member, link) = pool_member(&caddy, Duration::from_millis(300), 100);
    assert_eq!(member.step(), Step::Done);
    assert_eq!(caddy.members("api"), [(APP.to_owned(), false, 100)]);
    assert!(lock(&link.state).registered);
    assert_eq!(lock(&link.state).registrations, 1);
    assert_eq!(member.step(), Step::Done, "a read, not a write");
    assert_eq!(
        caddy.requests().last().map(String::as_str),
        Some("GET /beacon/pools")
    );
    thread::sleep(Duration::from_millis(110));
    assert_eq!(member.step(), Step::Done);
    assert_eq!(
        caddy.requests().last().map(String::as_str),
        Some("POST /beacon/pools/api/renew")
    );
    assert_eq!(registrations(&caddy), 1);
}

#[test]
fn a_restarted_caddy_that_forgot_the_member_gets_it_again() {
    let caddy = FakeCaddy::with_pool("api");
    let (mut member, link) = pool_member(&caddy, Duration::from_secs(30), 100);
    assert_eq!(member.step(), Step::Done);
    caddy.restart_with_pool("api");
    assert_eq!(
        member.step(),
        Step::Again,
        "the read finds it gone: register at once"
    );
    assert!(!lock(&link.state).registered);
    assert_eq!(member.step(), Step::Done);
    assert_eq!(caddy.members("api").len(), 1);
    assert_eq!(
        (registrations(&caddy), lock(&link.state).registrations),
        (2, 2)
    );
}

#[test]
fn a_lease_that_ended_in_caddy_is_registered_again_at_the_renewal() {
    let caddy = FakeCaddy::with_pool("api");
    let (mut member, _) = pool_member(&caddy, Duration::from_millis(1_200), 100);
    assert_eq!(member.step(), Step::Done);
    caddy.advance(Duration::from_secs(5)); // the module's clock: the lease ran out (a stalled companion)
    assert!(caddy.members("api").is_empty());
    thread::sleep(Duration::from_millis(410));
    assert_eq!(member.step(), Step::Again, "the renewal answers 404");
    assert_eq!(member.step(), Step::Done);
    assert_eq!(caddy.members("api").len(), 1);
}

#[test]
fn a_weight_set_in_caddy_is_adopted_and_registered_with_after_a_restart() {
    let caddy = FakeCaddy::with_pool("api");
    let (mut member, link) = pool_member(&caddy, Duration::from_secs(30), 100);
    member.step();
    caddy.set_weight("api", APP, 30);
    assert_eq!(member.step(), Step::Done);
    assert_eq!(lock(&link.state).weight, Some(30));
    caddy.restart_with_pool("api");
    assert_eq!(member.step(), Step::Again);
    member.step();
    assert_eq!(
        caddy.members("api"),
        [(APP.to_owned(), false, 30)],
        "not --weight's 100"
    );
}

#[test]
fn failures_are_retried_and_a_refusal_is_said() {
    let caddy = FakeCaddy::with_pool("api");
    let (mut member, link) = pool_member(&caddy, Duration::from_secs(30), 100);
    caddy.fail_next("POST /beacon/pools/api/register", Fault::Status(502));
    assert!(matches!(member.step(), Step::Retry(message) if message.contains("502")));
    caddy.fail_next("POST /beacon/pools/api/register", Fault::Unreachable);
    assert!(
        matches!(member.step(), Step::Retry(message) if message.contains("connection refused"))
    );
    assert_eq!(lock(&link.state).admin_errors, 2);
    assert_eq!(member.step(), Step::Done, "and then it works");
    // A Caddy whose pool is not declared refuses (404 on register is not "forgotten").
    let undeclared = FakeCaddy::with_pool("other");
    let (mut stranger, _) = pool_member(&undeclared, Duration::from_secs(30), 100);
    assert!(matches!(stranger.step(), Step::Retry(message) if message.contains("unknown pool")));
}

#[test]
fn leaving_drains_waits_for_requests_in_flight_and_removes() {
    let caddy = FakeCaddy::with_pool("api");
    let (mut member, link) = pool_member(&caddy, Duration::from_secs(30), 100);
    member.step();
    caddy.set_in_flight(APP, 2);
    let drained_later = caddy.clone();
    let finisher = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        drained_later.set_in_flight(APP, 0);
    });
    let report = member.leave(Instant::now() + Duration::from_secs(10));
    finisher.join().expect("the finisher");
    assert!(report.is_clean(), "{report:?}");
    assert!(
        report.elapsed >= Duration::from_millis(250),
        "it waited for the requests: {report:?}"
    );
    assert!(caddy.members("api").is_empty());
    let writes: Vec<String> = caddy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("POST"))
        .collect();
    assert_eq!(
        writes[1..],
        [
            "POST /beacon/pools/api/drain".to_owned(),
            "POST /beacon/pools/api/remove".to_owned()
        ]
    );
    assert!(!lock(&link.state).registered);
}

#[test]
fn leaving_stops_waiting_at_the_deadline_and_says_what_was_left() {
    let caddy = FakeCaddy::with_pool("api");
    let (mut member, _) = pool_member(&caddy, Duration::from_secs(30), 100);
    member.step();
    caddy.set_in_flight(APP, 3);
    let report = member.leave(Instant::now() + Duration::from_millis(400));
    assert_eq!(report.still_in_flight, 3);
    assert!(report.elapsed < Duration::from_secs(3));
    assert!(
        caddy.members("api").is_empty(),
        "removed anyway: the app is about to stop"
    );
}

#[test]
fn leaving_a_member_caddy_forgot_has_nothing_to_do() {
    let caddy = FakeCaddy::with_pool("api");
    let (mut member, _) = pool_member(&caddy, Duration::from_secs(30), 100);
    member.step();
    caddy.restart_with_pool("api");
    let report = member.leave(Instant::now() + Duration::from_secs(5));
    assert!(report.is_clean(), "{report:?}");
    assert!(!caddy.requests().iter().any(|r| r.ends_with("/remove")));
}

// --- following the companion's phase --------------------------------------------------------

#[test]
fn follow_waits_for_the_app_serves_and_leaves_when_told() {
    let caddy = FakeCaddy::with_pool("api");
    let (member, link) = pool_member(&caddy, Duration::from_secs(30), 100);
    let control = Arc::clone(&link.control);
    let following = {
        let link = link.clone();
        thread::spawn(move || follow(&link, Box::new(member)))
    };
    thread::sleep(Duration::from_millis(150));
    assert_eq!(registrations(&caddy), 0, "nothing before the app is ready");
    control.set(Phase::Serving);
    let deadline = Instant::now() + Duration::from_secs(5);
    while caddy.members("api").is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(caddy.members("api").len(), 1);
    control.set(Phase::Leaving {
        deadline: Instant::now() + Duration::from_secs(5),
    });
    let report = following.join().expect("the membership thread");
    assert!(report.is_clean(), "{report:?}");
    assert!(caddy.members("api").is_empty());
}

// --- config edits -----------------------------------------------------------------------------

/// A stock Caddy's config for `:8080 { reverse_proxy }` (no static upstreams), as the
/// Caddyfile adapter writes it.
fn caddyfile_config() -> Value {
    json!({"apps": {"http": {"servers": {"srv0": {"listen": [":8080"], "routes": [
        {"handle": [{"handler": "subroute", "routes": [{"handle": [{"handler": "reverse_proxy"}]}]}]}
    ]}}}}})
}

fn config_edit(caddy: &FakeCaddy) -> (Reconciler, CaddyLink) {
    let link = link(caddy);
    let settings = ConfigEditSettings {
        target: Target::Site(":8080".into()),
        events: EventsSetting::Off,
        reap_after: None,
    };
    let upstream = Upstream::parse(APP).expect("an upstream");
    (
        Reconciler::new(link.clone(), upstream, settings, None),
        link,
    )
}

fn dials(caddy: &FakeCaddy) -> Vec<Value> {
    let config = caddy.config();
    let proxy = &config["apps"]["http"]["servers"]["srv0"]["routes"][0]["handle"][0]["routes"][0]
        ["handle"][0];
    proxy["upstreams"].as_array().cloned().unwrap_or_default()
}

#[test]
fn config_edits_add_the_entry_once_and_again_after_a_restart() {
    let caddy = FakeCaddy::stock(caddyfile_config());
    let (mut reconciler, link) = config_edit(&caddy);
    assert_eq!(reconciler.step(), Step::Done);
    assert_eq!(dials(&caddy).len(), 1);
    assert_eq!(dials(&caddy)[0]["dial"], json!(APP));
    assert!(lock(&link.state).registered);
    let writes = |caddy: &FakeCaddy| {
        caddy
            .requests()
            .iter()
            .filter(|r| !r.starts_with("GET"))
            .count()
    };
    assert_eq!(writes(&caddy), 1, "one PUT creating the upstreams array");
    assert_eq!(reconciler.step(), Step::Done);
    assert_eq!(writes(&caddy), 1, "nothing to write when it is there");
    // Caddy restarted from its Caddyfile: the entry is gone; the next step puts it back.
    caddy.replace_config(caddyfile_config());
    assert_eq!(reconciler.step(), Step::Done);
    assert_eq!(dials(&caddy).len(), 1);
}

#[test]
fn a_stale_write_is_read_again_a_5xx_retried_and_a_4xx_blocked_until_the_config_changes() {
    let caddy = FakeCaddy::stock(caddyfile_config());
    let (mut reconciler, _) = config_edit(&caddy);
    caddy.fail_next("PUT /config/", Fault::Status(412));
    assert_eq!(
        reconciler.step(),
        Step::Done,
        "412: read again and write again"
    );
    assert_eq!(dials(&caddy).len(), 1);

    let caddy = FakeCaddy::stock(caddyfile_config());
    let (mut reconciler, _) = config_edit(&caddy);
    caddy.fail_next("PUT /config/", Fault::Status(500));
    assert!(matches!(reconciler.step(), Step::Retry(message) if message.contains("500")));
    assert_eq!(reconciler.step(), Step::Done);

    let caddy = FakeCaddy::stock(caddyfile_config());
    let (mut reconciler, _) = config_edit(&caddy);
    caddy.fail_next("PUT /config/", Fault::Status(400));
    assert!(matches!(reconciler.step(), Step::Blocked(_)));
    let puts = |caddy: &FakeCaddy| {
        caddy
            .requests()
            .iter()
            .filter(|r| r.starts_with("PUT"))
            .count()
    };
    assert!(
        matches!(reconciler.step(), Step::Blocked(_)),
        "the same config version: not written again"
    );
    assert_eq!(puts(&caddy), 1);
    caddy.replace_config(
        json!({"apps": caddyfile_config()["apps"], "admin": {"listen": "localhost:2019"}}),
    );
    assert_eq!(
        reconciler.step(),
        Step::Done,
        "a new config version: tried again"
    );
    assert_eq!(puts(&caddy), 2);
}

#[test]
fn config_edits_leave_by_removing_the_entry_and_waiting_for_its_requests() {
    let caddy = FakeCaddy::stock(caddyfile_config());
    let (mut reconciler, link) = config_edit(&caddy);
    reconciler.step();
    caddy.set_in_flight(APP, 1);
    let drained_later = caddy.clone();
    let finisher = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        drained_later.set_in_flight(APP, 0);
    });
    let report = reconciler.leave(Instant::now() + Duration::from_secs(10));
    finisher.join().expect("the finisher");
    assert!(report.is_clean(), "{report:?}");
    assert!(dials(&caddy).is_empty());
    assert!(caddy
        .requests()
        .iter()
        .any(|r| r.starts_with("DELETE /id/")));
    assert!(!lock(&link.state).registered);
}

#[test]
fn a_site_caddy_does_not_have_is_blocked_with_the_reason() {
    let caddy = FakeCaddy::stock(json!({"apps": {"http": {"servers": {}}}}));
    let (mut reconciler, _) = config_edit(&caddy);
    assert!(matches!(reconciler.step(), Step::Blocked(line) if line.contains(":8080")));
}

// --- choosing the mode ------------------------------------------------------------------------

fn pool_mode(fallback: Option<ConfigEditSettings>) -> JoinMode {
    JoinMode::Pool {
        pool: PoolSettings {
            name: "api".into(),
            lease: Duration::from_secs(30),
            weight: 100,
        },
        fallback,
    }
}

/// Runs `join` on a thread until `ready` holds, then tells it to leave.
fn join_until(
    caddy: &FakeCaddy,
    mode: JoinMode,
    ready: impl Fn(&FakeCaddy) -> bool,
) -> super::leave::LeaveReport {
    let link = link(caddy);
    link.control.set(Phase::Serving);
    let control = Arc::clone(&link.control);
    let joining = thread::spawn(move || {
        let upstream = Upstream::parse(APP).expect("an upstream");
        join(link, &upstream, &mode)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready(caddy) {
        assert!(
            Instant::now() < deadline,
            "timed out: {:?}",
            caddy.requests()
        );
        thread::sleep(Duration::from_millis(10));
    }
    control.set(Phase::Leaving {
        deadline: Instant::now() + Duration::from_secs(5),
    });
    joining.join().expect("the membership thread")
}

#[test]
fn a_caddy_without_the_module_is_joined_through_its_config_when_the_options_say_how() {
    let caddy = FakeCaddy::stock(caddyfile_config());
    let fallback = ConfigEditSettings {
        target: Target::Site(":8080".into()),
        events: EventsSetting::Off,
        reap_after: None,
    };
    let report = join_until(&caddy, pool_mode(Some(fallback)), |caddy| {
        dials(caddy).len() == 1
    });
    assert!(report.is_clean(), "{report:?}");
    assert!(dials(&caddy).is_empty(), "its entry removed when leaving");
    assert_eq!(
        caddy.requests().first().map(String::as_str),
        Some("GET /beacon/pools"),
        "asked for the module first"
    );
}

#[test]
fn a_caddy_without_the_module_and_no_fallback_is_asked_again_and_never_edited() {
    let caddy = FakeCaddy::stock(caddyfile_config());
    let report = join_until(&caddy, pool_mode(None), |caddy| {
        !caddy.requests().is_empty()
    });
    assert!(report.is_clean(), "nothing to leave: {report:?}");
    assert!(
        caddy.requests().iter().all(|r| r == "GET /beacon/pools"),
        "{:?}",
        caddy.requests()
    );
    assert!(dials(&caddy).is_empty());
}

#[test]
fn an_unreachable_caddy_is_asked_again_until_it_answers() {
    let caddy = FakeCaddy::with_pool("api");
    caddy.fail_next("GET /beacon/pools", Fault::Unreachable);
    let report = join_until(&caddy, pool_mode(None), |caddy| {
        caddy.members("api").len() == 1
    });
    assert!(report.is_clean(), "{report:?}");
    let asked = caddy
        .requests()
        .iter()
        .take_while(|r| *r == "GET /beacon/pools")
        .count();
    assert!(
        asked >= 2,
        "asked again after the failure: {:?}",
        caddy.requests()
    );
}

// --- what config-edit mode reads while serving ------------------------------------------------

const GONE: &str = "10.0.0.9:8000";

fn reaping(caddy: &FakeCaddy, reap_after: Duration) -> (Reconciler, CaddyLink) {
    let link = link(caddy);
    let settings = ConfigEditSettings {
        target: Target::Site(":8080".into()),
        events: EventsSetting::Off,
        reap_after: Some(reap_after),
    };
    let upstream = Upstream::parse(APP).expect("an upstream");
    (
        Reconciler::new(link.clone(), upstream, settings, None),
        link,
    )
}

/// The Caddyfile's config with an entry (and its events log) left by a companion that is gone.
fn config_with_a_vanished_companion() -> Value {
    let mut config = caddyfile_config();
    config["apps"]["http"]["servers"]["srv0"]["routes"][0]["handle"][0]["routes"][0]["handle"][0]
        ["upstreams"] = json!([{"@id": "caddy-beacon-gone", "dial": GONE}]);
    config["logging"] =
        json!({"logs": {"caddy-beacon-events-gone": {"writer": {"output": "discard"}}}});
    config
}

#[test]
fn caddy_s_verdict_and_in_flight_count_are_read_while_serving() {
    let caddy = FakeCaddy::stock(caddyfile_config());
    caddy.set_healthy(APP, false);
    caddy.set_in_flight(APP, 2);
    let (mut reconciler, link) = config_edit(&caddy);
    assert_eq!(reconciler.step(), Step::Done);
    let state = lock(&link.state);
    assert_eq!(state.in_flight, Some(2));
    assert_eq!(state.fails, Some(0));
    assert_eq!(state.became_unhealthy, 1, "Caddy's gauge says unhealthy");
}

#[test]
fn an_entry_of_a_vanished_companion_is_reaped_once_unhealthy_long_enough_with_its_log() {
    let caddy = FakeCaddy::stock(config_with_a_vanished_companion());
    caddy.set_healthy(GONE, false);
    let (mut reconciler, link) = reaping(&caddy, Duration::ZERO);
    assert_eq!(reconciler.step(), Step::Done);
    let left: Vec<Value> = dials(&caddy).iter().map(|u| u["dial"].clone()).collect();
    assert_eq!(left, [json!(APP)], "the vanished entry reaped, ours added");
    assert!(caddy.config()["logging"]["logs"]
        .get("caddy-beacon-events-gone")
        .is_none());
    assert_eq!(lock(&link.state).reaped, 1);
}

#[test]
fn an_entry_that_is_healthy_or_not_long_unhealthy_is_kept() {
    let caddy = FakeCaddy::stock(config_with_a_vanished_companion());
    caddy.set_healthy(GONE, true);
    let (mut reconciler, _) = reaping(&caddy, Duration::ZERO);
    reconciler.step();
    assert_eq!(dials(&caddy).len(), 2, "healthy: kept");

    let caddy = FakeCaddy::stock(config_with_a_vanished_companion());
    caddy.set_healthy(GONE, false);
    let (mut reconciler, link) = reaping(&caddy, Duration::from_secs(3600));
    reconciler.step();
    assert_eq!(
        dials(&caddy).len(),
        2,
        "not unhealthy for an hour yet: kept"
    );
    assert_eq!(lock(&link.state).reaped, 0);
}
