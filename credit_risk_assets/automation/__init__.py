"""Operations: the daily and monthly schedules, the source-correction sensor, instance settings."""
