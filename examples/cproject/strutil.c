#include <ctype.h>
#include "util.h"

void shout(char *s) {
    for (; *s; s++) *s = (char)toupper((unsigned char)*s);
}
