#include <math.h>
#include <stdio.h>
#include "config.h"
#include "shapes.h"
#include "table.h"
#include "util.h"

int main(void) {
    char greeting[] = GREETING;
    int sum = 0;
    for (int i = 0; i < TABLE_SIZE; i++) sum += table[i];
    shout(greeting);
    printf("%s\n", greeting);
    printf("sum of squares: %d, scaled: %d\n", sum, scaled(sum));
    printf("area: %.3f, sqrt: %.3f\n", total_area(3, 1.5), sqrt((double)sum));
    return 0;
}
