"""Front ends: widgets generated from the tables (controls, explorer, dashboard, runner)."""
