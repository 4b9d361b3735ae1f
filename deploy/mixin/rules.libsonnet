// Recording rules. jobwatch's alerts read its series directly, so there are none
// yet; the field is here so that a mixin consumer can rely on it.
{
  prometheusRules+:: {
    groups+: [],
  },
}
