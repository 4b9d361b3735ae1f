// Everything a user may want to change, in one place. Override it from your own
// jsonnet instead of editing the generated files:
//
//   local jobwatch = (import 'deploy/mixin/mixin.libsonnet') + {
//     _config+:: { jobwatchSelector: 'job="s3-jobwatch"', severities+: { jobFailed: 'warning' } },
//   };
//   jobwatch.prometheusAlerts
//
// docs/deploy.md ("Customising the alerts and the dashboard") lists the fields.
{
  _config+:: {
    // Label matchers that select jobwatch's series, and its scrape targets' `up`.
    jobwatchSelector: 'job="jobwatch"',

    // The labels that tell one jobwatch fleet from another (a Deployment or a
    // sharded StatefulSet). Absence and sharding are judged per fleet; with
    // showMultiCluster the cluster label is added to them.
    fleetLabels: ['namespace', 'job'],

    // The labels Prometheus adds per scrape target. Job and target alerts aggregate
    // them away, so that a rollout (new pod, new instance) keeps the alert's
    // identity: the alert neither resolves nor fires again.
    instanceLabels: ['instance', 'pod'],

    // One Prometheus (or Thanos, Mimir) holding several clusters' jobwatches.
    showMultiCluster: false,
    clusterLabel: 'cluster',

    // %s is the alert name, lower-cased (the anchor of its section in docs/runbooks.md).
    // Point it at your copy of the runbooks.
    runbookURLPattern: 'https://github.com/jobwatch/jobwatch/blob/main/docs/runbooks.md#%s',

    // jobwatch's status page as people reach it (its web.external_url, e.g.
    // 'https://jobwatch.example.com'). When set, every S3BatchJob* alert carries a
    // status_page_url annotation that opens the job there; empty: no such annotation.
    statusPageURL: '',

    // Who hears about what (deploy/alertmanager/alertmanager.yaml routes by severity:
    // critical pages, warning goes to chat, info to a low-traffic channel). A failed
    // job is somebody's own job: where that is a ticket rather than a page, set
    // jobFailed to 'warning'.
    severities: {
      jobFailed: 'critical',
      jobStalled: 'warning',
      jobHighTaskFailureRatio: 'warning',
      jobAwaitingConfirmation: 'warning',
      jobStuckInStatus: 'warning',
      targetDown: 'warning',
      pollsStale: 'warning',
      throttled: 'warning',
      pollOverruns: 'info',
      unknownValues: 'info',
      absent: 'critical',
      scrapeFailing: 'warning',
      shardMismatch: 'warning',
      shardMissing: 'critical',
      discoveryFailing: 'warning',
      pushConsumerDown: 'warning',
      pushDeadLetters: 'warning',
    },

    // How long an alert on jobwatch's own series keeps firing once they vanish: a
    // missed scrape, or a rollout (the old pod gone, the new one not yet polled),
    // must not resolve an alert only to fire it again minutes later.
    keepFiringFor: '10m',

    // Job alerts. stall.no_progress and stall.status_limits are jobwatch's own
    // config; these only add a `for`.
    jobStalledFor: '5m',
    jobStatusOverdueFor: '5m',
    // Mirror stall.task_failure_ratio and stall.task_failure_min_tasks.
    taskFailureRatio: 0.1,
    taskFailureMinTasks: 100,
    taskFailureFor: '10m',

    // Target alerts.
    targetDownFor: '5m',
    pollsStaleSeconds: 600,
    pollsStaleFor: '1m',
    throttledRatio: 0.1,
    throttledWindow: '10m',
    throttledFor: '15m',
    pollOverrunsWindow: '30m',
    pollOverrunsFor: '30m',
    unknownValuesWindow: '1h',

    // jobwatch's own health.
    absentFor: '5m',
    // A fleet seen this recently that has no healthy target now is absent. One gone
    // for longer stops alerting: remove it from Prometheus or silence it first.
    fleetLookback: '1d',
    scrapeFailingFor: '5m',
    shardMismatchFor: '15m',
    shardMissingFor: '5m',
    discoveryFailingFor: '30m',
    // The push path (docs/push.md): a queue not received from for this long (a
    // healthy consumer returns from a long poll every 20 s at most) is down.
    pushReceiveStaleSeconds: 300,
    pushConsumerDownFor: '10m',
    // The dead-letter queue gained messages within this window.
    pushDeadLettersWindow: '30m',

    // The Grafana dashboard.
    dashboardUID: 'jobwatch-s3-batch',
    dashboardTitle: 'S3 Batch Operations (jobwatch)',
    dashboardTags: ['jobwatch', 's3', 'aws'],
    dashboardRefresh: '1m',
    dashboardTimezone: 'utc',
  },
}
