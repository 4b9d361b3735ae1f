// The Grafana dashboard. Every panel query carries the jobwatch selector and the
// dashboard's variables: cluster (with showMultiCluster), namespace, job, account
// and region. Series without an account (jobwatch_build_info) are joined to the
// selected targets instead.
{
  local c = $._config,
  local ds = { type: 'prometheus', uid: '${datasource}' },
  local join(xs) = std.join(', ', std.filter(function(x) x != '', xs)),

  local clusterMatcher = if c.showMultiCluster then '%s=~"$cluster"' % c.clusterLabel else '',
  // The fleet: which Prometheus job and namespace (and cluster) the series come from.
  local fleetMatchers = [c.jobwatchSelector, clusterMatcher, 'namespace=~"$namespace"', 'job=~"$job"'],
  local targetMatchers = ['aws_account_id=~"$account"', 'aws_region=~"$region"'],
  // metric{<fleet>, <extra>, <account and region>}
  local s(name, extra=[]) = name + '{' + join(fleetMatchers + extra + targetMatchers) + '}',
  // A series of the jobwatch processes (no account or region): metric{<fleet>}.
  local pushSeries(name) = name + '{' + join(fleetMatchers) + '}',
  local without = std.join(', ', c.instanceLabels),
  local joinOn = join([if c.showMultiCluster then c.clusterLabel else '', 'job', 'instance']),

  local target(refId, expr, legend=null, instant=false, format=null) = {
    datasource: ds,
    refId: refId,
    expr: expr,
    [if legend != null then 'legendFormat']: legend,
    [if instant then 'instant']: true,
    [if format != null then 'format']: format,
  },
  local thresholds(steps) = { mode: 'absolute', steps: steps },
  local green = { color: 'green', value: null },

  local panel(id, type, title, description, grid, targets) = {
    id: id,
    type: type,
    title: title,
    description: description,
    datasource: ds,
    gridPos: { h: grid[3], w: grid[2], x: grid[0], y: grid[1] },
    targets: targets,
  },
  local row(id, title, y) = {
    id: id,
    type: 'row',
    title: title,
    collapsed: false,
    gridPos: { h: 1, w: 24, x: 0, y: y },
    panels: [],
  },
  local stat(id, title, description, grid, expr, steps=[green]) =
    panel(id, 'stat', title, description, grid, [target('A', expr, instant=true)]) + {
      fieldConfig: { defaults: { unit: 'none', thresholds: thresholds(steps) }, overrides: [] },
      options: {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        colorMode: 'background',
        graphMode: 'none',
        textMode: 'value',
      },
    },
  local timeseries(id, title, description, grid, targets, unit='none', fill=0, stacking='none', steps=null) =
    panel(id, 'timeseries', title, description, grid, targets) + {
      fieldConfig: {
        defaults: {
          unit: unit,
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: fill,
            stacking: { mode: stacking, group: 'A' },
            showPoints: 'never',
          },
          [if steps != null then 'thresholds']: thresholds(steps),
        },
        overrides: [],
      },
      options: {
        legend: { displayMode: 'table', placement: 'right', calcs: ['lastNotNull'] },
        tooltip: { mode: 'multi', sort: 'desc' },
      },
    },
  local table(id, title, description, grid, expr, transformation) =
    panel(id, 'table', title, description, grid, [target('A', expr, instant=true, format='table')]) + {
      fieldConfig: { defaults: {}, overrides: [] },
      options: { showHeader: true },
      transformations: [transformation],
    },

  local variable(name, label, query) = {
    name: name,
    label: label,
    type: 'query',
    datasource: ds,
    query: { query: query, refId: name + '-query' },
    definition: query,
    refresh: 2,
    multi: true,
    includeAll: true,
    allValue: '.*',
    current: { selected: true, text: ['All'], value: ['$__all'] },
    sort: 1,
    hide: 0,
    options: [],
  },
  local fleetUpTo(n) = '{' + join(std.slice([c.jobwatchSelector, clusterMatcher, 'namespace=~"$namespace"', 'job=~"$job"'], 0, n, 1)) + '}',

  grafanaDashboards+:: {
    'jobwatch-dashboard.json': {
      __inputs: [],
      uid: c.dashboardUID,
      title: c.dashboardTitle,
      description: "S3 Batch Operations jobs across AWS accounts and regions, and jobwatch's own health. Metrics: docs/metrics.md.",
      tags: c.dashboardTags,
      editable: true,
      graphTooltip: 1,
      timezone: c.dashboardTimezone,
      refresh: c.dashboardRefresh,
      schemaVersion: 39,
      version: 1,
      time: { from: 'now-24h', to: 'now' },
      timepicker: {},
      links: [],
      annotations: { list: [] },
      templating: {
        list: [
          {
            name: 'datasource',
            label: 'Data source',
            type: 'datasource',
            query: 'prometheus',
            refresh: 1,
            hide: 0,
            current: {},
            options: [],
            regex: '',
          },
        ] + (
          if c.showMultiCluster then
            [variable('cluster', 'Cluster', 'label_values(jobwatch_build_info%s, %s)' % [fleetUpTo(1), c.clusterLabel])]
          else []
        ) + [
          variable('namespace', 'Namespace', 'label_values(jobwatch_build_info%s, namespace)' % fleetUpTo(2)),
          variable('job', 'Job', 'label_values(jobwatch_build_info%s, job)' % fleetUpTo(3)),
          variable('account', 'Account', 'label_values(jobwatch_target_up%s, aws_account_id)' % fleetUpTo(4)),
          variable(
            'region',
            'Region',
            'label_values(jobwatch_target_up{%s}, aws_region)' % join(fleetMatchers + ['aws_account_id=~"$account"']),
          ),
        ],
      },
      panels: [
        row(1, 'S3 Batch Operations jobs', 0),
        stat(2, 'Active jobs', 'Jobs in status Active across the selected accounts and regions.', [0, 1, 6, 4],
             'sum(%s)' % s('s3batch_jobs', ['status="Active"'])),
        stat(3, 'Failed jobs (retention window)', "Jobs that ended Failed and are still within jobwatch's terminal_retention (24h by default).", [6, 1, 6, 4],
             'sum(%s)' % s('s3batch_jobs', ['status="Failed"']), [green, { color: 'red', value: 1 }]),
        stat(4, 'Stalled jobs now', 'Active jobs whose task counts have not moved for stall.no_progress.', [12, 1, 6, 4],
             'sum(%s)' % s('s3batch_job_stalled'), [green, { color: 'orange', value: 1 }]),
        stat(5, 'Jobs overdue in a status', 'Jobs held in a non-terminal status longer than its stall.status_limits entry.', [18, 1, 6, 4],
             'sum(%s)' % s('s3batch_job_status_overdue'), [green, { color: 'orange', value: 1 }]),
        timeseries(6, 'Jobs by status', 'Tracked jobs by status (ended jobs count while within terminal_retention).', [0, 5, 12, 8],
                   [target('A', 'sum by (status) (%s)' % s('s3batch_jobs'), '{{status}}')], fill=30, stacking='normal'),
        table(7, 'Jobs by status per account', 'Tracked jobs per account and status (statuses with no job are left out).', [12, 5, 12, 8],
              'sum by (aws_account_id, status) (%s) > 0' % s('s3batch_jobs'),
              { id: 'groupingToMatrix', options: { columnField: 'status', rowField: 'aws_account_id', valueField: 'Value' } }),
        timeseries(8, 'Failures over time', 'Failed jobs per account within terminal_retention, and jobs that entered Failed in each interval.', [0, 13, 12, 8], [
          target('A', 'sum by (aws_account_id) (%s)' % s('s3batch_jobs', ['status="Failed"']), '{{aws_account_id}} failed jobs (retention window)'),
          target(
            'B',
            'count by (aws_account_id) (max without (%(w)s) (%(x)s == 1) unless max without (%(w)s) (%(x)s offset $__rate_interval == 1))' % {
              w: without,
              x: s('s3batch_job_status', ['status="Failed"']),
            },
            '{{aws_account_id}} newly failed',
          ),
        ]),
        table(9, 'Stalled jobs now', 'Active jobs with no task progress for stall.no_progress.', [12, 13, 12, 8],
              '(%s == 1) * ignoring (operation, priority, failure_code) group_left (operation) %s' % [s('s3batch_job_stalled'), s('s3batch_job_info')],
              { id: 'organize', options: { excludeByName: { Time: true, Value: true, __name__: true }, indexByName: {}, renameByName: {} } }),
        panel(10, 'bargauge', 'Progress of active jobs', "Share of each Active job's tasks that have run (succeeded or failed).", [0, 21, 12, 9], [
          target(
            'A',
            '(%s + %s) / clamp_min(%s, 1) and ignoring (status) (%s == 1)' % [
              s('s3batch_job_tasks_succeeded'),
              s('s3batch_job_tasks_failed'),
              s('s3batch_job_tasks'),
              s('s3batch_job_status', ['status="Active"']),
            ],
            '{{aws_account_id}} {{aws_region}} {{job_id}}',
            instant=true,
          ),
        ]) + {
          fieldConfig: { defaults: { unit: 'percentunit', min: 0, max: 1, thresholds: thresholds([{ color: 'blue', value: null }]) }, overrides: [] },
          options: { orientation: 'horizontal', displayMode: 'gradient', reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false } },
        },
        timeseries(11, 'Task failure ratio of active jobs',
                   'failed / (succeeded + failed) for Active jobs; S3BatchJobHighTaskFailureRatio fires above %s after %d tasks.' % [c.taskFailureRatio, c.taskFailureMinTasks],
                   [12, 21, 12, 9],
                   [target('A', '%s and ignoring (status) (%s == 1)' % [s('s3batch_job_task_failure_ratio'), s('s3batch_job_status', ['status="Active"'])],
                           '{{aws_account_id}} {{aws_region}} {{job_id}}')],
                   unit='percentunit', steps=[green, { color: 'red', value: c.taskFailureRatio }]),
        timeseries(12, 'Jobs overdue in a status', 'Jobs held in a non-terminal status longer than stall.status_limits allows (Suspended: awaiting confirmation).', [0, 30, 24, 6],
                   [target('A', '(%s == 1) * ignoring (status) group_left (status) (%s == 1)' % [s('s3batch_job_status_overdue'), s('s3batch_job_status')],
                           '{{aws_account_id}} {{aws_region}} {{job_id}} {{status}}')]),
        row(13, 'jobwatch', 36),
        panel(14, 'state-timeline', 'Target health', "1 when the target's last poll succeeded.", [0, 37, 12, 8],
              [target('A', s('jobwatch_target_up'), '{{aws_account_id}} {{aws_region}}')]) + {
          fieldConfig: {
            defaults: {
              mappings: [{ type: 'value', options: { '0': { text: 'down', color: 'red' }, '1': { text: 'up', color: 'green' } } }],
              thresholds: thresholds([{ color: 'red', value: null }, { color: 'green', value: 1 }]),
            },
            overrides: [],
          },
          options: { showValue: 'never', mergeValues: true, rowHeight: 0.8 },
        },
        timeseries(15, 'Time since last successful poll', 'JobwatchPollsStale fires above %ds.' % c.pollsStaleSeconds, [12, 37, 12, 8],
                   [target('A', 'time() - %s' % s('jobwatch_target_last_success_timestamp_seconds'), '{{aws_account_id}} {{aws_region}}')],
                   unit='s', steps=[green, { color: 'red', value: c.pollsStaleSeconds }]),
        timeseries(16, 'Poll duration', "Duration of each selected target's last poll, and the 95th percentile over them.", [0, 45, 12, 8], [
          target('A', s('jobwatch_target_poll_duration_seconds'), '{{aws_account_id}} {{aws_region}}'),
          target('B', 'quantile(0.95, %s)' % s('jobwatch_target_poll_duration_seconds'), 'p95, selected targets'),
        ], unit='s'),
        timeseries(17, 'API requests', 'S3 Control HTTP attempts per second (retries included), by operation and outcome.', [12, 45, 12, 8],
                   [target('A', 'sum by (operation, outcome) (rate(%s[$__rate_interval]))' % s('jobwatch_api_requests_total'), '{{operation}} {{outcome}}')],
                   unit='reqps'),
        timeseries(18, 'Throttled requests', 'Throttled S3 Control attempts per second, per target.', [0, 53, 12, 8],
                   [target('A', 'sum by (aws_account_id, aws_region) (rate(%s[$__rate_interval]))' % s('jobwatch_api_requests_total', ['outcome="throttled"']),
                           '{{aws_account_id}} {{aws_region}}')],
                   unit='reqps'),
        timeseries(19, 'Poll failures and overruns', 'Failed polls and polls that took longer than the interval.', [12, 53, 12, 8], [
          target('A', 'sum by (aws_account_id, aws_region) (increase(%s[$__rate_interval]))' % s('jobwatch_target_polls_total', ['outcome="failure"']),
                 '{{aws_account_id}} {{aws_region}} failed'),
          target('B', 'sum by (aws_account_id, aws_region) (increase(%s[$__rate_interval]))' % s('jobwatch_target_poll_overruns_total'),
                 '{{aws_account_id}} {{aws_region}} overran'),
        ]),
        stat(20, 'Targets watched', 'Selected (account, region) targets that jobwatch watches.', [0, 61, 6, 4],
             'count(%s)' % s('jobwatch_target_up')),
        stat(21, 'Targets down', 'Selected targets whose last poll failed.', [6, 61, 6, 4],
             'count(%s == 0) or vector(0)' % s('jobwatch_target_up'), [green, { color: 'red', value: 1 }]),
        panel(22, 'stat', 'jobwatch version', 'From jobwatch_build_info, of the jobwatch processes that watch the selected targets.', [12, 61, 12, 4], [
          target(
            'A',
            'count by (version, python_version) (jobwatch_build_info{%s} and on (%s) %s)' % [join(fleetMatchers), joinOn, s('jobwatch_target_up')],
            '{{version}} (Python {{python_version}})',
            instant=true,
          ),
        ]) + {
          fieldConfig: { defaults: {}, overrides: [] },
          options: { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, textMode: 'name', colorMode: 'none', graphMode: 'none' },
        },
        // Push (docs/push.md): empty unless push: is configured. Like the version
        // above, the series name no target, so they are joined to the selected ones.
        row(23, 'Push (EventBridge through SQS)', 65),
        timeseries(24, 'Push messages', 'Queue messages per second by what became of them (jobwatch_push_messages_total): reported and confirmed looks, duplicates, unwatched, unparseable... Empty unless push: is configured.', [0, 66, 8, 8], [
          target('A', 'sum by (result) (rate(%s[$__rate_interval]) and on (%s) %s)' % [pushSeries('jobwatch_push_messages_total'), joinOn, s('jobwatch_target_up')],
                 '{{result}}'),
        ], unit='reqps'),
        timeseries(25, 'Transitions by who found them', 'Status transitions reported per second, by push or by polls (poll_unannounced: no event came for it). push / all is how much push covers.', [8, 66, 8, 8], [
          target('A', 'sum by (found_by) (rate(%s[$__rate_interval]) and on (%s) %s)' % [pushSeries('jobwatch_push_transitions_total'), joinOn, s('jobwatch_target_up')],
                 '{{found_by}}'),
        ], unit='reqps'),
        timeseries(26, 'Push lag', 'From a job event to jobwatch reporting the change it announced (jobwatch_push_lag_seconds), median and 99th percentile.', [16, 66, 8, 8], [
          target('A', 'histogram_quantile(0.5, sum by (le) (rate(%s[$__rate_interval]) and on (%s) %s))' % [pushSeries('jobwatch_push_lag_seconds_bucket'), joinOn, s('jobwatch_target_up')],
                 'p50'),
          target('B', 'histogram_quantile(0.99, sum by (le) (rate(%s[$__rate_interval]) and on (%s) %s))' % [pushSeries('jobwatch_push_lag_seconds_bucket'), joinOn, s('jobwatch_target_up')],
                 'p99'),
        ], unit='s'),
        timeseries(27, 'Push queues', "Each queue's consumer (1: its last ReceiveMessage succeeded) and the messages in its dead-letter queue.", [0, 74, 24, 6], [
          target('A', 'max by (queue) (%s and on (%s) %s)' % [pushSeries('jobwatch_push_consumer_up'), joinOn, s('jobwatch_target_up')],
                 '{{queue}} up'),
          target('B', 'max by (queue) (%s and on (%s) %s)' % [pushSeries('jobwatch_push_dead_letter_messages'), joinOn, s('jobwatch_target_up')],
                 '{{queue}} dead letters'),
        ]),
      ],
    },
  },
}
