#ifndef SHAPES_H
#define SHAPES_H
#ifdef __cplusplus
extern "C" {
#endif
double total_area(int squares, double radius);
#ifdef __cplusplus
}
#endif
#endif
