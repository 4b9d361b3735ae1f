// jsonnet rules.jsonnet: the recording rules as a Prometheus rule file (JSON).
(import 'mixin.libsonnet').prometheusRules
