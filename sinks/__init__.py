"""Database side: versioned migrations and the consumers that copy every topic into PostgreSQL/TimescaleDB."""
