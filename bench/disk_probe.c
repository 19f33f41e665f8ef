/*
 * bench/disk_probe.c: the longest time the disk took to make 8 kB durable
 * while a benchmark run went on.
 *
 *     disk_probe FILE SECONDS
 *
 * Writes 8 kB to FILE and fdatasync()s it every 10 ms for SECONDS seconds,
 * then prints the longest fdatasync in milliseconds ("412.30").  bench/pooler.sh
 * runs it beside each run, on the file system of the cluster: with
 * synchronous_commit on every commit waits for a WAL flush, so a flush that
 * stalls for 400 ms (seen on this machine's virtual disk about once in 15 s)
 * delays every commit of those 400 ms, whichever implementation is running.
 * The probe tells such a run apart from one where the implementation was slow.
 */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

int
main(int argc, char **argv)
{
	static char block[8192];
	const struct timespec pause = {0, 10 * 1000 * 1000};
	double		end,
				longest = 0;
	int			fd;

	if (argc != 3 || atoi(argv[2]) <= 0)
	{
		fprintf(stderr, "usage: disk_probe FILE SECONDS\n");
		return 2;
	}
	fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
	{
		perror(argv[1]);
		return 1;
	}
	memset(block, 'x', sizeof(block));
	end = now_ms() + atoi(argv[2]) * 1000.0;
	while (now_ms() < end)
	{
		double		start = now_ms(),
					took;

		if (pwrite(fd, block, sizeof(block), 0) != (ssize_t) sizeof(block) || fdatasync(fd) != 0)
		{
			perror(argv[1]);
			return 1;
		}
		took = now_ms() - start;
		if (took > longest)
			longest = took;
		nanosleep(&pause, NULL);
	}
	close(fd);
	unlink(argv[1]);
	printf("%.2f\n", longest);
	return 0;
}
