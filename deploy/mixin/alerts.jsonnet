// jsonnet -J . alerts.jsonnet: the alerting rules as a Prometheus rule file (JSON).
(import 'mixin.libsonnet').prometheusAlerts
