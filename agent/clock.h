/*
 * clock -- monotonic and wall-clock time in microseconds and milliseconds.
 */
#ifndef KD_CLOCK_H
#define KD_CLOCK_H

#include <stdint.h>

uint64_t clock_mono_us(void);
uint64_t clock_wall_us(void);
uint64_t clock_wall_ms(void);
/* Sleeps ms milliseconds (restarts on EINTR unless *stop becomes set). */
void clock_sleep_ms(long long ms, const volatile int *stop);

#endif
