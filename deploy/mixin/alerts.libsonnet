// Alerting rules: S3 Batch Operations jobs, the targets jobwatch polls, and
// jobwatch itself. Every number, selector and severity comes from _config.
//
// Identity. A job alert is about the job (account, region, job_id), not about the
// pod that reported it: the rules aggregate instanceLabels away, so a rollout or a
// second replica does not make a second alert, and keep_firing_for bridges the gap
// a missed scrape or a restart leaves in the series. Alerts about a scrape target
// or a pod (JobwatchScrapeFailing, JobwatchDiscoveryFailing) keep them.
//
// Counters. A counter first scraped above zero (jobwatch counted before the first
// scrape: the common case after a restart) has no increase() to show. The rules
// that fire on any count (JobwatchUnknownValues, JobwatchPollOverruns) also fire
// for such a new series (`x > 0 unless x offset <window>`). JobwatchThrottled is a
// ratio of rates held for 15 minutes: a new series only joins it a scrape late.
{
  local c = $._config,
  local fleet = c.fleetLabels + (if c.showMultiCluster then [c.clusterLabel] else []),
  local by = std.join(', ', fleet),
  local without = std.join(', ', c.instanceLabels),
  // metric{<jobwatchSelector>, <extra matchers>}
  local m(name, extra=[]) =
    name + '{' + std.join(', ', std.filter(function(x) x != '', [c.jobwatchSelector] + extra)) + '}',
  local where =
    if c.showMultiCluster then ' (cluster {{ $labels.%s }})' % c.clusterLabel else '',
  // 'fleet namespace=a job=jobwatch', leaving out labels the alert does not have.
  local fleetText = 'fleet' + std.join('', ['{{ with $labels.%s }} %s={{ . }}{{ end }}' % [l, l] for l in fleet]),
  local percent(ratio) = '%d%%' % std.floor(ratio * 100 + 0.5),
  // '15m' -> '15 minutes'; a duration of several units ('1h30m') is left as written.
  local words = { s: 'second', m: 'minute', h: 'hour', d: 'day' },
  local human(d) =
    local unit = std.substr(d, std.length(d) - 1, 1);
    local n = std.substr(d, 0, std.length(d) - 1);
    local digits = std.length([ch for ch in std.stringChars(n) if std.member('0123456789', ch)]);
    if std.objectHas(words, unit) && n != '' && digits == std.length(n)
    then '%s %s%s' % [n, words[unit], if n == '1' then '' else 's']
    else d,
  local job = 'job {{ $labels.job_id }} in account {{ $labels.aws_account_id }}, region {{ $labels.aws_region }}',
  local target = 'account {{ $labels.aws_account_id }}, region {{ $labels.aws_region }}',

  local alert(name, severity, expr, annotations, forDuration=null, keep=false) = {
    alert: name,
    expr: expr,
    [if forDuration != null then 'for']: forDuration,
    [if keep then 'keep_firing_for']: c.keepFiringFor,
    labels: { severity: severity },
    annotations: {
      summary: annotations.summary + where,
      description: annotations.description,
      runbook_url: c.runbookURLPattern % std.asciiLower(name),
      // The page's link for one job (jobwatch's model.status_page_url).
      [if c.statusPageURL != '' && std.startsWith(name, 'S3BatchJob') then 'status_page_url']:
        std.rstripChars(c.statusPageURL, '/')
        + '/?account={{ $labels.aws_account_id | urlquery }}&region={{ $labels.aws_region | urlquery }}&job={{ $labels.job_id | urlquery }}',
    },
  },

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'jobwatch-jobs',
        rules: [
          alert(
            'S3BatchJobFailed',
            c.severities.jobFailed,
            |||
              max without (%(without)s) (
                (%(status)s == 1)
                * ignoring (status, operation, priority, failure_code) group_left (operation, failure_code)
                %(info)s
              )
            ||| % {
              without: without,
              status: m('s3batch_job_status', ['status="Failed"']),
              info: m('s3batch_job_info'),
            },
            {
              summary: 'S3 Batch Operations job {{ $labels.job_id }} failed in account {{ $labels.aws_account_id }}, region {{ $labels.aws_region }}',
              description: 'Job {{ $labels.job_id }} ({{ $labels.operation }}) in account {{ $labels.aws_account_id }}, region {{ $labels.aws_region }} ended with status Failed{{ with $labels.failure_code }} ({{ . }}){{ end }}. The alert resolves when the job ages out of jobwatch (terminal_retention), %s later.' % human(c.keepFiringFor),
            },
            keep=true,
          ),
          alert(
            'S3BatchJobStalled',
            c.severities.jobStalled,
            |||
              max without (%(without)s) (
                (%(stalled)s == 1)
                * ignoring (operation, priority, failure_code) group_left (operation)
                %(info)s
              )
            ||| % { without: without, stalled: m('s3batch_job_stalled'), info: m('s3batch_job_info') },
            {
              summary: 'S3 Batch Operations %s is Active but making no progress' % job,
              description: "Job {{ $labels.job_id }} ({{ $labels.operation }}) in account {{ $labels.aws_account_id }}, region {{ $labels.aws_region }} is Active and has not completed or failed a single task for longer than jobwatch's stall.no_progress.",
            },
            forDuration=c.jobStalledFor,
            keep=true,
          ),
          alert(
            'S3BatchJobHighTaskFailureRatio',
            c.severities.jobHighTaskFailureRatio,
            |||
              max without (%(without)s) (
                (
                  %(ratio)s > %(threshold)s
                  and
                  (%(succeeded)s + %(failed)s) >= %(min)d
                )
                unless ignoring (status)
                (%(status)s == 1)
              )
            ||| % {
              without: without,
              ratio: m('s3batch_job_task_failure_ratio'),
              threshold: c.taskFailureRatio,
              succeeded: m('s3batch_job_tasks_succeeded'),
              failed: m('s3batch_job_tasks_failed'),
              min: c.taskFailureMinTasks,
              status: m('s3batch_job_status', ['status="Failed"']),
            },
            {
              summary: 'S3 Batch Operations %s is failing {{ $value | humanizePercentage }} of its tasks' % job,
              description: 'Job {{ $labels.job_id }} in account {{ $labels.aws_account_id }}, region {{ $labels.aws_region }}: {{ $value | humanizePercentage }} of the tasks run so far failed (threshold %s of at least %d tasks). Objects are being left unprocessed.' % [percent(c.taskFailureRatio), c.taskFailureMinTasks],
            },
            forDuration=c.taskFailureFor,
            keep=true,
          ),
          alert(
            'S3BatchJobAwaitingConfirmation',
            c.severities.jobAwaitingConfirmation,
            |||
              max without (%(without)s) (
                (%(overdue)s == 1)
                and ignoring (status)
                (%(status)s == 1)
              )
            ||| % {
              without: without,
              overdue: m('s3batch_job_status_overdue'),
              status: m('s3batch_job_status', ['status="Suspended"']),
            },
            {
              summary: 'S3 Batch Operations %s has been waiting in Suspended too long' % job,
              description: 'Job {{ $labels.job_id }} in account {{ $labels.aws_account_id }}, region {{ $labels.aws_region }} has been Suspended for longer than stall.status_limits.Suspended. A job created with confirmation required waits there until someone runs it or cancels it.',
            },
            forDuration=c.jobStatusOverdueFor,
            keep=true,
          ),
          alert(
            'S3BatchJobStuckInStatus',
            c.severities.jobStuckInStatus,
            |||
              max without (%(without)s) (
                (%(overdue)s == 1)
                * ignoring (status) group_left (status)
                (%(status)s == 1)
              )
            ||| % {
              without: without,
              overdue: m('s3batch_job_status_overdue'),
              status: m('s3batch_job_status', ['status!="Suspended"']),
            },
            {
              summary: 'S3 Batch Operations %s is stuck in {{ $labels.status }}' % job,
              description: 'Job {{ $labels.job_id }} in account {{ $labels.aws_account_id }}, region {{ $labels.aws_region }} has been in status {{ $labels.status }} for longer than stall.status_limits.{{ $labels.status }}.',
            },
            forDuration=c.jobStatusOverdueFor,
            keep=true,
          ),
        ],
      },
      {
        name: 'jobwatch-self',
        rules: [
          alert(
            'JobwatchTargetDown',
            c.severities.targetDown,
            'max without (%s) (%s) == 0\n' % [without, m('jobwatch_target_up')],
            {
              summary: 'jobwatch cannot list S3 Batch Operations jobs in %s' % target,
              description: 'Every poll of account {{ $labels.aws_account_id }}, region {{ $labels.aws_region }} has failed for %s (jobwatch logs the error; jobwatch_target_consecutive_failures counts them). Failed or stalled jobs there go unnoticed until it recovers.' % human(c.targetDownFor),
            },
            forDuration=c.targetDownFor,
            keep=true,
          ),
          alert(
            'JobwatchPollsStale',
            c.severities.pollsStale,
            'time() - max without (%s) (%s) > %d\n' % [without, m('jobwatch_target_last_success_timestamp_seconds'), c.pollsStaleSeconds],
            {
              summary: 'No successful poll of %s for {{ $value | humanizeDuration }}' % target,
              description: 'jobwatch last listed the jobs of account {{ $labels.aws_account_id }}, region {{ $labels.aws_region }} {{ $value | humanizeDuration }} ago, several poll intervals past due. Its metrics for that target are stale.',
            },
            forDuration=c.pollsStaleFor,
            keep=true,
          ),
          alert(
            'JobwatchThrottled',
            c.severities.throttled,
            |||
              sum without (%(without)s, operation, outcome) (rate(%(throttled)s[%(window)s]))
              /
              sum without (%(without)s, operation, outcome) (rate(%(all)s[%(window)s]))
              > %(threshold)s
            ||| % {
              without: without,
              throttled: m('jobwatch_api_requests_total', ['outcome="throttled"']),
              all: m('jobwatch_api_requests_total'),
              window: c.throttledWindow,
              threshold: c.throttledRatio,
            },
            {
              summary: "S3 Control throttles {{ $value | humanizePercentage }} of jobwatch's requests in %s" % target,
              description: "For %s more than %s of jobwatch's ListJobs/DescribeJob attempts in account {{ $labels.aws_account_id }}, region {{ $labels.aws_region }} were throttled. Retries absorb some; polls slow down and may start failing." % [human(c.throttledFor), percent(c.throttledRatio)],
            },
            forDuration=c.throttledFor,
            keep=true,
          ),
          alert(
            'JobwatchPollOverruns',
            c.severities.pollOverruns,
            |||
              max without (%(without)s) (
                (increase(%(overruns)s[%(window)s]) > 0)
                or
                (%(overruns)s > 0 unless %(overruns)s offset %(window)s)
              )
            ||| % { without: without, overruns: m('jobwatch_target_poll_overruns_total'), window: c.pollOverrunsWindow },
            {
              summary: 'Polls of %s keep taking longer than the poll interval' % target,
              description: 'At every evaluation for %s, polls of account {{ $labels.aws_account_id }}, region {{ $labels.aws_region }} had overrun the interval at least once in the %s before: overruns recur, so that target is polled less often than configured.' % [human(c.pollOverrunsFor), human(c.pollOverrunsWindow)],
            },
            forDuration=c.pollOverrunsFor,
            keep=true,
          ),
          alert(
            'JobwatchUnknownValues',
            c.severities.unknownValues,
            |||
              max without (%(without)s) (
                (increase(%(unknown)s[%(window)s]) > 0)
                or
                (%(unknown)s > 0 unless %(unknown)s offset %(window)s)
              )
            ||| % { without: without, unknown: m('jobwatch_unknown_values_total'), window: c.unknownValuesWindow },
            {
              summary: 'jobwatch saw a job {{ $labels.field }} it does not know',
              description: 'S3 Control returned a job {{ $labels.field }} that this jobwatch version does not know (AWS adds operations from time to time). It is exported as is; upgrade jobwatch to have it classified.',
            },
            keep=true,
          ),
          alert(
            'JobwatchAbsent',
            c.severities.absent,
            |||
              (
                group by (%(by)s) (max_over_time(%(up)s[%(lookback)s]))
                unless
                group by (%(by)s) (%(up)s == 1)
              )
              or
              absent_over_time(%(up)s[%(lookback)s])
            ||| % { by: by, up: m('up'), lookback: c.fleetLookback },
            {
              summary: 'Prometheus has no running jobwatch of %s to scrape' % fleetText,
              description: 'No successful scrape of the jobwatch %s for %s: none of its accounts and regions is being watched, so their failed and stalled S3 Batch Operations jobs go unnoticed.' % [fleetText, human(c.absentFor)],
            },
            forDuration=c.absentFor,
          ),
          alert(
            'JobwatchScrapeFailing',
            c.severities.scrapeFailing,
            '%s == 0\n' % m('up'),
            {
              summary: 'Prometheus cannot scrape jobwatch at {{ $labels.instance }}',
              description: 'Every scrape of {{ $labels.instance }} (%s) has failed for %s: the pod is not ready, not listening, or unreachable from Prometheus. Its targets are not watched meanwhile.' % [fleetText, human(c.scrapeFailingFor)],
            },
            forDuration=c.scrapeFailingFor,
          ),
        ],
      },
      {
        // Sharding and discovery (docs/scaling.md), judged per fleet.
        name: 'jobwatch-scale',
        rules: [
          alert(
            'JobwatchShardMismatch',
            c.severities.shardMismatch,
            |||
              count by (%(by)s) (
                count_values by (%(by)s) ("total_shards", %(total)s)
              ) > 1
              or
              max by (%(by)s) (
                count_values by (%(by)s) ("shard_ordinal", %(ordinal)s)
              ) > 1
            ||| % { by: by, total: m('jobwatch_total_shards'), ordinal: m('jobwatch_shard_ordinal') },
            {
              summary: 'The jobwatch pods of %s disagree on sharding' % fleetText,
              description: 'For %s the jobwatch pods of %s have reported different total shard counts, or two of them the same shard ordinal. Targets are then watched twice (duplicate series and events) or not at all.' % [human(c.shardMismatchFor), fleetText],
            },
            forDuration=c.shardMismatchFor,
          ),
          alert(
            'JobwatchShardMissing',
            c.severities.shardMissing,
            |||
              count by (%(by)s) (
                count_values by (%(by)s) ("shard_ordinal", %(ordinal)s)
              )
              < max by (%(by)s) (%(total)s)
            ||| % { by: by, total: m('jobwatch_total_shards'), ordinal: m('jobwatch_shard_ordinal') },
            {
              summary: 'Only {{ $value }} shard(s) of jobwatch %s report' % fleetText,
              description: 'For %s only {{ $value }} distinct shard(s) of %s have been scraped, fewer than the jobwatch_total_shards they report. The targets of a missing shard are not watched, so their failed and stalled jobs go unnoticed.' % [human(c.shardMissingFor), fleetText],
            },
            forDuration=c.shardMissingFor,
          ),
          alert(
            'JobwatchDiscoveryFailing',
            c.severities.discoveryFailing,
            '%s == 0\n' % m('jobwatch_discovery_up'),
            {
              summary: "jobwatch {{ $labels.instance }} cannot list the organization's accounts",
              description: 'For %s every account discovery refresh of {{ $labels.instance }} has failed (its logs say discovery_failed with the AWS error code). It keeps watching the accounts it knew last: accounts that joined since are not watched, and accounts that left are still polled.' % human(c.discoveryFailingFor),
            },
            forDuration=c.discoveryFailingFor,
          ),
          alert(
            'JobwatchPushConsumerDown',
            c.severities.pushConsumerDown,
            |||
              (%(up)s == 0)
              or
              (time() - %(last)s > %(stale)d)
            ||| % {
              up: m('jobwatch_push_consumer_up'),
              last: m('jobwatch_push_last_receive_timestamp_seconds'),
              stale: c.pushReceiveStaleSeconds,
            },
            {
              summary: 'jobwatch {{ $labels.instance }} is not receiving job events from {{ $labels.queue }}',
              description: 'For %s jobwatch {{ $labels.instance }} has failed to receive from the push queue {{ $labels.queue }}, or has not received for more than %d seconds (its logs say push_receive_failed with the AWS error code). Polling still reports every change, one poll interval later than push would.' % [human(c.pushConsumerDownFor), c.pushReceiveStaleSeconds],
            },
            forDuration=c.pushConsumerDownFor,
          ),
          alert(
            'JobwatchPushDeadLetters',
            c.severities.pushDeadLetters,
            |||
              max without (%(without)s) (
                delta(%(dead)s[%(window)s])
              ) > 0
            ||| % { without: without, dead: m('jobwatch_push_dead_letter_messages'), window: c.pushDeadLettersWindow },
            {
              summary: 'The dead-letter queue of {{ $labels.queue }} is growing',
              description: 'The dead-letter queue of the push queue {{ $labels.queue }} gained messages in the last %s: messages jobwatch could not parse (logged as push_message_unparseable with their message id), or whose DescribeJob kept failing. Polling reports those changes; the messages wait there to be read.' % human(c.pushDeadLettersWindow),
            },
          ),
        ],
      },
    ],
  },
}
