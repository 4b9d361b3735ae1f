// jsonnet -m out/ dashboards.jsonnet: one file per dashboard.
(import 'mixin.libsonnet').grafanaDashboards
