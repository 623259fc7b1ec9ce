"""Settings for the whole suite."""

from hypothesis import HealthCheck, settings

# The first text strategy drawn in a fresh checkout makes hypothesis build its Unicode
# table (about 2 s on the CI machine, cached under .hypothesis/ afterwards), and the
# too_slow health check charges that to whichever test draws first: a clean-clone CI
# run failed on it. How fast inputs are generated is not what this suite tests.
settings.register_profile("ztproxy", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ztproxy")
