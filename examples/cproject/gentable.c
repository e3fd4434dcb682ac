/* Prints a header with a table of squares; run during the build. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 4;
    printf("#define TABLE_SIZE %d\nstatic const int table[TABLE_SIZE] = {", n);
    for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", i * i);
    printf("};\n");
    return 0;
}
