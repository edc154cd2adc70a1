//! The nemesis: a schedule of faults drawn from the seed, and the code that applies and
//! heals each one.
//!
//! The schedule fixes what happens and when (offsets from the start of the run); which
//! node "the leader" is gets resolved when the fault starts, since elections are not
//! deterministic. One fault is active at a time and is healed before the next quiet
//! period, so the cluster keeps a majority most of the time and the clients make progress.

use std::fmt;
use std::time::Duration;

use super::cluster::Cluster;
use super::rng::Rng;

/// A kind of fault the nemesis may inject (the `--faults` list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL a node, then restart it.
    Kill,
    /// SIGSTOP a node, then SIGCONT it.
    Pause,
    /// Partition the network, then heal it.
    Partition,
    /// SIGKILL several nodes at once (a majority, sometimes all), then restart them: the
    /// cluster is unavailable meanwhile and must recover everything acknowledged.
    Crash,
}

impl Fault {
    /// Parses one name of the `--faults` list.
    pub fn parse(name: &str) -> Result<Fault, String> {
        match name.trim() {
            "kill" => Ok(Fault::Kill),
            "pause" => Ok(Fault::Pause),
            "partition" => Ok(Fault::Partition),
            "crash" => Ok(Fault::Crash),
            other => Err(format!(
                "unknown fault {other:?} (known: kill, pause, partition, crash)"
            )),
        }
    }
}

/// Which node a kill or pause hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Whoever is leader when the fault starts.
    Leader,
    /// A node picked by the seed (an index below the cluster size).
    Node(usize),
}

/// The shape of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The leader alone on one side.
    LeaderIsolated,
    /// These nodes (a minority) against the rest.
    Split(Vec<usize>),
    /// Two sides that cannot talk to each other, joined by one bridge node that talks to
    /// both.
    Bridge {
        /// The node that sees everyone.
        bridge: usize,
        /// One side (the rest is the other).
        side: Vec<usize>,
    },
}

/// One step of the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Kill then restart.
    Kill(Target),
    /// Pause then resume.
    Pause(Target),
    /// Partition then heal.
    Partition(Shape),
    /// Kill these nodes at once, then restart them all.
    Crash(Vec<usize>),
}

/// One scheduled fault: it starts at `start` and is healed `hold` later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    /// Offset from the start of the run.
    pub start: Duration,
    /// How long the fault lasts.
    pub hold: Duration,
    /// What it is.
    pub action: Action,
}

impl fmt::Display for Scheduled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at {:>6.2}s for {:.2}s: {:?}",
            self.start.as_secs_f64(),
            self.hold.as_secs_f64(),
            self.action
        )
    }
}

/// Draws a schedule for a run of `duration` on `nodes` nodes from `rng`.
pub fn schedule(
    rng: &mut Rng,
    nodes: usize,
    duration: Duration,
    faults: &[Fault],
) -> Vec<Scheduled> {
    let mut out = Vec::new();
    if faults.is_empty() {
        return out;
    }
    let mut at = Duration::from_millis(rng.between(500, 1500));
    loop {
        let hold = Duration::from_millis(rng.between(800, 3000));
        if at + hold > duration {
            return out;
        }
        let action = match faults[rng.index(faults.len())] {
            Fault::Kill => Action::Kill(target(rng, nodes)),
            Fault::Pause => Action::Pause(target(rng, nodes)),
            Fault::Partition => Action::Partition(shape(rng, nodes)),
            Fault::Crash => {
                let count = rng.between(nodes as u64 / 2 + 1, nodes as u64) as usize;
                Action::Crash(shuffled(rng, nodes)[..count].to_vec())
            }
        };
        out.push(Scheduled {
            start: at,
            hold,
            action,
        });
        at += hold + Duration::from_millis(rng.between(300, 1500));
    }
}

fn target(rng: &mut Rng, nodes: usize) -> Target {
    if rng.chance(50) {
        Target::Leader
    } else {
        Target::Node(rng.index(nodes))
    }
}

fn shuffled(rng: &mut Rng, nodes: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..nodes).collect();
    for index in (1..nodes).rev() {
        order.swap(index, rng.index(index + 1));
    }
    order
}

fn shape(rng: &mut Rng, nodes: usize) -> Shape {
    let order = shuffled(rng, nodes);
    match rng.below(3) {
        0 => Shape::LeaderIsolated,
        1 => Shape::Split(order[..nodes / 2].to_vec()),
        _ => Shape::Bridge {
            bridge: order[0],
            side: order[1..nodes.div_ceil(2)].to_vec(),
        },
    }
}

/// For every node, the peers it must drop, for `shape` with the current `leader`.
pub fn blocked_lists(shape: &Shape, nodes: usize, leader: Option<usize>) -> Vec<Vec<usize>> {
    let (side, bridge): (Vec<usize>, Option<usize>) = match shape {
        Shape::LeaderIsolated => (leader.into_iter().collect(), None),
        Shape::Split(side) => (side.clone(), None),
        Shape::Bridge { bridge, side } => (side.clone(), Some(*bridge)),
    };
    (0..nodes)
        .map(|node| {
            if Some(node) == bridge {
                return vec![];
            }
            let mine = side.contains(&node);
            (0..nodes)
                .filter(|&other| Some(other) != bridge && other != node)
                .filter(|other| side.contains(other) != mine)
                .collect()
        })
        .collect()
}

/// What the nemesis did, for the summary.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Nodes killed (and restarted).
    pub kills: u64,
    /// Nodes paused (and resumed).
    pub pauses: u64,
    /// Partitions made (and healed).
    pub partitions: u64,
    /// Crashes of several nodes at once (their nodes also count in `kills`).
    pub crashes: u64,
}

/// A fault in force, to heal.
pub enum Active {
    /// Nodes are down.
    Killed(Vec<usize>),
    /// A node is stopped.
    Paused(usize),
    /// The network is cut.
    Partitioned,
}

/// Starts `action`; returns what to heal and a line for the log.
pub async fn inject(
    cluster: &mut Cluster,
    action: &Action,
    rng: &mut Rng,
    counts: &mut Counts,
) -> Result<(Active, String), String> {
    let nodes = cluster.nodes.len();
    let resolve = |target: Target, leader: Option<usize>, rng: &mut Rng| match target {
        Target::Leader => leader.unwrap_or_else(|| rng.index(nodes)),
        Target::Node(index) => index,
    };
    let leader = cluster.leader().await;
    match action {
        Action::Kill(target) => {
            let index = resolve(*target, leader, rng);
            cluster.kill(index);
            counts.kills += 1;
            Ok((
                Active::Killed(vec![index]),
                format!("SIGKILL {}", cluster.nodes[index].id),
            ))
        }
        Action::Crash(victims) => {
            for &index in victims {
                cluster.kill(index);
            }
            counts.kills += victims.len() as u64;
            counts.crashes += 1;
            let ids: Vec<&str> = victims
                .iter()
                .map(|&index| cluster.nodes[index].id.as_str())
                .collect();
            Ok((
                Active::Killed(victims.clone()),
                format!("SIGKILL {} at once", ids.join(",")),
            ))
        }
        Action::Pause(target) => {
            let index = resolve(*target, leader, rng);
            cluster.pause(index);
            counts.pauses += 1;
            Ok((
                Active::Paused(index),
                format!("SIGSTOP {}", cluster.nodes[index].id),
            ))
        }
        Action::Partition(shape) => {
            let blocked = blocked_lists(shape, nodes, leader);
            cluster.partition(&blocked).await?;
            counts.partitions += 1;
            let ids = |list: &Vec<usize>| {
                list.iter()
                    .map(|&index| cluster.nodes[index].id.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let cuts: Vec<String> = blocked
                .iter()
                .enumerate()
                .filter(|(_, list)| !list.is_empty())
                .map(|(index, list)| format!("{}-x-[{}]", cluster.nodes[index].id, ids(list)))
                .collect();
            Ok((
                Active::Partitioned,
                format!("partition {shape:?}: {}", cuts.join(" ")),
            ))
        }
    }
}

/// Ends a fault.
pub async fn heal(cluster: &mut Cluster, active: Active) -> Result<String, String> {
    match active {
        Active::Killed(victims) => {
            let mut ids = Vec::new();
            for index in victims {
                cluster.restart(index).await?;
                ids.push(cluster.nodes[index].id.clone());
            }
            Ok(format!("restarted {}", ids.join(",")))
        }
        Active::Paused(index) => {
            cluster.resume(index);
            Ok(format!("SIGCONT {}", cluster.nodes[index].id))
        }
        Active::Partitioned => {
            cluster.heal().await?;
            Ok("healed".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_node_talks_to_both_sides() {
        let shape = Shape::Bridge {
            bridge: 2,
            side: vec![0, 1],
        };
        let blocked = blocked_lists(&shape, 5, None);
        assert_eq!(blocked[2], Vec::<usize>::new());
        assert_eq!(blocked[0], vec![3, 4]);
        assert_eq!(blocked[3], vec![0, 1]);
    }

    #[test]
    fn leader_isolated_cuts_the_leader_only() {
        let blocked = blocked_lists(&Shape::LeaderIsolated, 3, Some(1));
        assert_eq!(blocked, vec![vec![1], vec![0, 2], vec![1]]);
    }

    #[test]
    fn schedules_replay_from_the_seed() {
        let all = [Fault::Kill, Fault::Pause, Fault::Partition, Fault::Crash];
        let a = schedule(&mut Rng::new(7), 5, Duration::from_secs(30), &all);
        let b = schedule(&mut Rng::new(7), 5, Duration::from_secs(30), &all);
        assert_eq!(a, b);
        assert!(a.len() > 5);
        assert!(
            a.iter()
                .all(|fault| fault.start + fault.hold <= Duration::from_secs(30))
        );
    }
}
