//! `GET /nodes` and the box on the attempts page (`[cluster]` only): the
//! nodes the cluster database has heard from, their last heartbeat, and a
//! clear warning when a node runs a policy that differs from the others
//! (the heartbeat carries each node's policy digest, as `weerwal db
//! status` shows). Without `[cluster]` the box is empty and the page says
//! there is one node.

use std::time::Duration;

use http::StatusCode;
use maud::{html, Markup};

use super::auth::Officer;
use super::{html as page_response, pages, AdminState};
use crate::cluster::node::{self, NodeRow, HEARTBEAT};
use crate::plumbing::ProxyBody;

/// How long the dashboard waits for the node list.
const WAIT: Duration = Duration::from_secs(3);

/// The nodes, or why they cannot be read.
async fn read(state: &AdminState) -> Option<Result<Vec<NodeRow>, String>> {
    let cluster = state.cluster.as_ref()?;
    if cluster.health.is_degraded() {
        return Some(Err("the cluster database is unreachable (this node is degraded)".into()));
    }
    Some(match tokio::time::timeout(WAIT, node::nodes(cluster)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("the cluster database did not answer within {} s", WAIT.as_secs())),
    })
}

fn short(digest: &str) -> String {
    digest.chars().take(16).collect()
}

/// The warning naming the nodes whose policy differs; empty when all agree.
fn drift_warning(nodes: &[NodeRow]) -> Markup {
    let differ = node::differing(nodes);
    let majority = node::majority_digest(nodes).unwrap_or("");
    html! {
        @if !differ.is_empty() {
            div.bad role="alert" {
                p {
                    strong { "Let op: niet alle knooppunten draaien hetzelfde beleid." }
                    span.en lang="en" { "Warning: not every node runs the same policy." }
                }
                ul {
                    @for n in &differ {
                        li {
                            "Knooppunt " strong { (n.node) } " draait beleid " code { (short(&n.policy_digest)) }
                            ", de andere knooppunten " code { (short(majority)) } "."
                            span.en lang="en" {
                                "Node " (n.node) " runs policy " (short(&n.policy_digest)) ", the others " (short(majority)) "."
                            }
                        }
                    }
                }
                p.hint {
                    "Zet op elk knooppunt dezelfde beleidsbestanden en laad ze opnieuw (SIGHUP of herstart); zie docs/cluster.md."
                    span.en lang="en" { "Deploy the same policy files to every node and reload them (SIGHUP or restart); see docs/cluster.md." }
                }
            }
        }
    }
}

/// The box on the attempts page: the drift warning (with a link to the
/// nodes page), or one line saying the nodes agree. Empty without `[cluster]`
/// and when the database cannot be read (the page says that already).
pub async fn drift_box(state: &AdminState) -> String {
    let Some(Ok(nodes)) = read(state).await else { return String::new() };
    let silent = nodes.iter().filter(|n| node::is_silent(n)).count();
    let differ = !node::differing(&nodes).is_empty();
    html! {
        @if differ {
            (drift_warning(&nodes))
            p { a href="/nodes" { "Knooppunten bekijken " span lang="en" { "/ View the nodes" } } }
        } @else {
            p.hint {
                (nodes.len()) " knooppunt(en), alle met hetzelfde beleid"
                @if silent > 0 { "; " (silent) " zonder recente hartslag" }
                ". " a href="/nodes" { "Knooppunten bekijken" }
                span.en lang="en" {
                    (nodes.len()) " node(s), all with the same policy"
                    @if silent > 0 { "; " (silent) " without a recent heartbeat" }
                    "."
                }
            }
        }
    }
    .into_string()
}

/// `GET /nodes`.
pub async fn page(state: &AdminState, officer: &Officer) -> http::Response<ProxyBody> {
    let this = state.cluster.as_ref().map(|c| c.node.clone()).unwrap_or_default();
    let (status, body) = match read(state).await {
        None => (
            StatusCode::OK,
            html! {
                p.note {
                    "Er is geen " code { "[cluster]" } " in de configuratie: dit is het enige knooppunt."
                    span.en lang="en" { "There is no [cluster] section: this is the only node." }
                }
            },
        ),
        Some(Err(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            html! {
                p.bad role="alert" {
                    strong { "De clusterdatabase is niet bereikbaar; de knooppunten kunnen niet worden getoond." }
                    " (" (why) ")"
                    span.en lang="en" { "The cluster database cannot be reached, so the nodes cannot be shown." }
                }
            },
        ),
        Some(Ok(nodes)) => (StatusCode::OK, table(&nodes, &this)),
    };
    page_response(status, pages::layout("Knooppunten", "Nodes", Some(officer), "/nodes", &body.into_string()))
}

fn table(nodes: &[NodeRow], this: &str) -> Markup {
    let differ: Vec<&str> = node::differing(nodes).iter().map(|n| n.node.as_str()).collect();
    html! {
        p {
            "De knooppunten die de clusterdatabase kent, met hun laatste hartslag (elke " (HEARTBEAT.as_secs())
            " s) en de vingerafdruk van hun beleid, zoals " code { "weerwal db status" } " ze toont."
            span.en lang="en" {
                "The nodes the cluster database knows, their last heartbeat and their policy digest, as "
                code { "weerwal db status" } " shows them."
            }
        }
        (drift_warning(nodes))
        table {
            caption { "Knooppunten " span lang="en" { "/ Nodes" } }
            thead {
                tr {
                    th scope="col" { "Knooppunt" }
                    th scope="col" { "Versie" }
                    th scope="col" { "Beleid (digest)" }
                    th scope="col" { "Laatste hartslag (UTC)" }
                    th scope="col" class="num" { "Geleden" }
                    th scope="col" { "Toestand" }
                }
            }
            tbody {
                @for n in nodes {
                    @let drifts = differ.contains(&n.node.as_str());
                    tr {
                        th scope="row" {
                            (n.node)
                            @if n.node == this { " " span.hint { "(dit knooppunt / this node)" } }
                        }
                        td { (n.version) }
                        td { code title=(n.policy_digest) { (short(&n.policy_digest)) } }
                        td { (n.heartbeat) }
                        td.num { (n.age_secs.max(0)) " s" }
                        td {
                            @if node::is_silent(n) {
                                strong { "stil" } " " span lang="en" { "/ silent" }
                            } @else {
                                "actief " span lang="en" { "/ alive" }
                            }
                            @if drifts {
                                ", " strong { "BELEID WIJKT AF" } " " span lang="en" { "/ POLICY DIFFERS" }
                            }
                        }
                    }
                }
                @if nodes.is_empty() {
                    tr { td colspan="6" { "Nog geen knooppunten. " span lang="en" { "No nodes yet." } } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: &str, digest: &str, age: i64) -> NodeRow {
        NodeRow {
            node: node.into(),
            version: "0.1.0".into(),
            policy_digest: digest.into(),
            heartbeat: "2026-12-03 10:00:00".into(),
            age_secs: age,
        }
    }

    #[test]
    fn the_node_whose_policy_differs_is_named_and_everything_is_escaped() {
        let nodes = vec![row("a", "aaaa", 1), row("b<script>", "bbbb", 1), row("c", "aaaa", 100)];
        let html = table(&nodes, "a").into_string();
        assert!(html.contains("POLICY DIFFERS"), "{html}");
        assert!(html.contains("b&lt;script&gt;") && !html.contains("<script>"), "{html}");
        assert!(html.contains("dit knooppunt"));
        assert!(html.contains("silent"));
        assert_eq!(html.matches("POLICY DIFFERS").count(), 1);
        let same = vec![row("a", "aaaa", 1), row("b", "aaaa", 1)];
        let html = table(&same, "a").into_string();
        assert!(!html.contains("POLICY DIFFERS") && !html.contains("role=\"alert\""), "{html}");
    }
}
