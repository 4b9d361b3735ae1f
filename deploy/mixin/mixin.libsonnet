// jobwatch's monitoring mixin: import this, override _config, and take
// prometheusAlerts, prometheusRules and grafanaDashboards from it.
// No dependencies (no jsonnet-bundler step), and only std functions that
// jsonnet 0.18 (Debian bookworm's) has; `make mixin` renders it into the files
// deploy/ ships.
(import 'config.libsonnet') +
(import 'alerts.libsonnet') +
(import 'rules.libsonnet') +
(import 'dashboards.libsonnet')
