"""Command-line tools the daemon never imports: doctor, demo, bench, release tooling."""
