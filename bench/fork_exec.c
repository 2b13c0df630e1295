/* Baseline for the command-run benchmark: N bare fork+exec+wait of a program,
 * split over LANES parallel processes. Prints "runs seconds". */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: fork_exec RUNS LANES PROGRAM\n");
        return 2;
    }
    int runs = atoi(argv[1]), lanes = atoi(argv[2]);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int lane = 0; lane < lanes; lane++) {
        if (fork() == 0) {
            int mine = runs / lanes + (lane < runs % lanes);
            for (int i = 0; i < mine; i++) {
                pid_t child = fork();
                if (child == 0) {
                    execl(argv[3], argv[3], (char *)NULL);
                    _exit(127);
                }
                int status;
                waitpid(child, &status, 0);
            }
            _exit(0);
        }
    }
    for (int lane = 0; lane < lanes; lane++) wait(NULL);
    clock_gettime(CLOCK_MONOTONIC, &end);
    printf("%d %.6f\n", runs, (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9);
    return 0;
}
