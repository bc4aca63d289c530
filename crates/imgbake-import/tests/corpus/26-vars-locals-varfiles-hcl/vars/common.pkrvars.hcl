# Shared by every environment.
pg_major      = 16
pg_extensions = ["pg_stat_statements", "pgcrypto", "pg_partman"]
extra_tags = {
  Team       = "data-platform"
  CostCenter = "cc-2210"
}
